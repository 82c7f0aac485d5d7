"""``cmta demo-summary``: the models' held-out c-index beside the planted risk's (the oracle)."""

from __future__ import annotations

HELP = "the demo's c-index table: every run beside the planted risk (oracle), fold by fold"


def add_arguments(p) -> None:
    p.add_argument("patients", help="patients.tsv of `cmta demo-cohort` (planted risk and scores)")
    p.add_argument("cindex", help="per-fold c-index table of `cmta report` (cindex.tsv)")
    p.add_argument("--train-dir", required=True, help="folder with <run>/fold_<k>/predictions.tsv")
    p.add_argument("-o", "--output", required=True, help="TSV: run, mean, sd, fold_<k>...")


def run(args) -> int:
    from ..demo_cohort import planted_summary
    from ..fileio import atomic_output

    table = planted_summary(args.patients, args.cindex, args.train_dir)
    with atomic_output(args.output) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    print("held-out c-index, mean +- sd over folds:")
    for row in table.itertuples():
        print(f"  {row.run:<24} {row.mean:.3f} +- {row.sd:.3f}")
    return 0
