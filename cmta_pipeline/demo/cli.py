"""The demo's commands: `cmta demo-cohort`, `cmta demo-encoder` and `cmta demo-summary`."""

from __future__ import annotations

# ---- cmta demo-cohort -----------------------------------------------------------


def add_demo_cohort_arguments(p) -> None:
    p.add_argument("--families", required=True, help="gene-family file (resources/demo/families.csv)")
    p.add_argument("-o", "--outdir", required=True,
                   help="folder for patients.tsv, genomics.csv, slides/ and planted.json")
    p.add_argument("--settings", default="{}",
                   help="JSON of the config's demo section (n_patients, seed, weights, ...)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes drawing the slides (speed only: the same pixels with any number)")


def run_demo_cohort(args) -> int:
    import json

    from ..errors import CMTAError
    from .cohort import DemoSettings, write_demo_cohort

    try:
        cfg = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise CMTAError(f"--settings: not JSON ({exc})") from None
    planted = write_demo_cohort(DemoSettings.from_config(cfg), args.families, args.outdir,
                                workers=max(1, args.workers))
    print(f"{planted['n_patients']} demo patients in {args.outdir} "
          f"({planted['censored_fraction']:.0%} censored); c-index on the whole cohort:")
    for name, value in planted["cindex_whole_cohort"].items():
        print(f"  {name}: {value:.3f}")
    return 0


# ---- cmta demo-encoder ----------------------------------------------------------


def add_demo_encoder_arguments(p) -> None:
    p.add_argument("slides", nargs="+", help="slide files to take tissue patches from")
    p.add_argument("-o", "--output", required=True, help="state dict (.pth) for features.weights")
    p.add_argument("--patch-px", type=int, required=True, help="patch side at level 0 (px)")
    p.add_argument("--input-px", type=int, required=True, help="encoder input side (px)")
    p.add_argument("--per-slide", type=int, default=4, help="patches per slide")


def run_demo_encoder(args) -> int:
    from .encoder import calibrated_random_encoder

    n = calibrated_random_encoder(args.slides, args.output, args.patch_px, args.input_px, args.per_slide)
    print(f"random ResNet-50, BatchNorm statistics from {n} patches -> {args.output}")
    return 0


# ---- cmta demo-summary ----------------------------------------------------------


def add_demo_summary_arguments(p) -> None:
    p.add_argument("patients", help="patients.tsv of `cmta demo-cohort` (planted risk and scores)")
    p.add_argument("cindex", help="per-fold c-index table of `cmta report` (cindex.tsv)")
    p.add_argument("--train-dir", required=True, help="folder with <run>/fold_<k>/predictions.tsv")
    p.add_argument("-o", "--output", required=True, help="TSV: run, mean, sd, fold_<k>...")


def run_demo_summary(args) -> int:
    from ..fileio import atomic_output
    from .summary import planted_summary

    table = planted_summary(args.patients, args.cindex, args.train_dir)
    with atomic_output(args.output) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    print("held-out c-index, mean +- sd over folds:")
    for row in table.itertuples():
        print(f"  {row.run:<24} {row.mean:.3f} +- {row.sd:.3f}")
    return 0


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "demo-cohort": (add_demo_cohort_arguments, run_demo_cohort),
    "demo-encoder": (add_demo_encoder_arguments, run_demo_encoder),
    "demo-summary": (add_demo_summary_arguments, run_demo_summary),
}
