"""``cmta demo-cohort``: the synthetic demo cohort (slides, genomics, survival) with planted risk."""

from __future__ import annotations

HELP = "write the synthetic demo cohort: slides, six-family genomics and survival with planted risk"


def add_arguments(p) -> None:
    p.add_argument("--families", required=True, help="gene-family file (resources/demo/families.csv)")
    p.add_argument("-o", "--outdir", required=True,
                   help="folder for patients.tsv, genomics.csv, slides/ and planted.json")
    p.add_argument("--settings", default="{}",
                   help="JSON of the config's demo section (n_patients, seed, weights, ...)")


def run(args) -> int:
    import json

    from ..demo_cohort import DemoSettings, write_demo_cohort
    from ..errors import CMTAError

    try:
        cfg = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise CMTAError(f"--settings: not JSON ({exc})") from None
    planted = write_demo_cohort(DemoSettings.from_config(cfg), args.families, args.outdir)
    print(f"{planted['n_patients']} demo patients in {args.outdir} "
          f"({planted['censored_fraction']:.0%} censored); c-index on the whole cohort:")
    for name, value in planted["cindex_whole_cohort"].items():
        print(f"  {name}: {value:.3f}")
    return 0
