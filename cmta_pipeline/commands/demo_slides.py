"""``cmta demo-slides``: small synthetic slides for patients of a genomic table (demo data)."""

from __future__ import annotations

HELP = "write small synthetic slides named after patients of a genomic table (for the demo)"


def add_arguments(p) -> None:
    p.add_argument("table", help="MCAT/CMTA-style table with a case_id column (csv or csv.gz)")
    p.add_argument("-o", "--outdir", required=True)
    p.add_argument("-n", "--n-patients", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import pandas as pd

    from ..errors import CMTAError
    from ..synthetic import write_demo_slides

    try:
        table = pd.read_csv(args.table, usecols=["case_id", "censorship"])
    except (OSError, ValueError) as exc:
        raise CMTAError(f"{args.table}: cannot read case_id and censorship ({exc})") from None
    patients = table.drop_duplicates("case_id").sort_values("case_id")
    # half with an event, half censored (as far as the table allows), reproducibly
    events = patients[patients.censorship == 0].case_id.tolist()
    censored = patients[patients.censorship == 1].case_id.tolist()
    half = args.n_patients // 2
    chosen = events[:half] + censored[: args.n_patients - half]
    paths = write_demo_slides(sorted(chosen), args.outdir, seed=args.seed)
    print(f"{len(paths)} demo slides in {args.outdir}")
    return 0
