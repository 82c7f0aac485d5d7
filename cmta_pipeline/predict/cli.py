"""`cmta predict`: risk for new patients from the fold models of a trained run."""

from __future__ import annotations

import argparse
import logging

# ---- cmta predict ---------------------------------------------------------------


log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True,
                   help="a trained run: folder with fold_<k>/model.pt and predictions.tsv "
                        "(the workflow's {outdir}/train/<run>)")
    p.add_argument("--cohort", required=True,
                   help="the `cmta cohort` folder the run was trained on (per-fold preprocessing)")
    p.add_argument("--genomics",
                   help="`cmta genomics` folder of the new patients (same family file; "
                        "--missing-survival keep for patients without follow-up)")
    p.add_argument("--features-dir", help="patch-feature folder of the new slides (models that read slides)")
    p.add_argument("--slides", help="slide sheet of the new patients (slide_id, case_id)")
    p.add_argument("--tiles-summary", help="tiling summary of the new slides (failed slides are left out)")
    p.add_argument("--cases", help="comma-separated case ids to predict (default: every patient given)")
    p.add_argument("--impute-missing-genes", action="store_true",
                   help="features absent from the new genomics are imputed with each fold's "
                        "training median (default: an error naming them)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("-o", "--output", required=True, help="output TSV, one row per patient")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..fileio import fresh_outputs
    from ..ids import check_id
    from .risk import predict_run, write_predictions

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [check_id(c.strip(), "case id", "--cases") for c in args.cases.split(",") if c.strip()] \
        if args.cases else None
    out = Path(args.output)
    with fresh_outputs(out.parent, (), marker=out.name):  # no earlier risk.tsv beside a failed run
        df = predict_run(
            args.run_dir, args.cohort, genomics_dir=args.genomics, features_dir=args.features_dir,
            slide_sheet=args.slides, tiles_summary=args.tiles_summary,
            impute_missing_genes=args.impute_missing_genes, device=args.device, cases=cases,
        )
        write_predictions(df, out)
    log.info("%d patients, %d fold models: %d high / %d low risk -> %s", len(df),
             int(df["n_folds"].iloc[0]), int((df["risk_group"] == "high").sum()),
             int((df["risk_group"] == "low").sum()), args.output)
    return 0


# ---- cmta external --------------------------------------------------------------


def add_external_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="a run trained on the train cohort (<outdir>/<train>/train/<run>)")
    p.add_argument("--cohort", required=True, help="the train cohort's `cmta cohort` folder (per-fold preprocessing)")
    p.add_argument("--test-cohort", required=True,
                   help="the test cohort's `cmta cohort` folder: its cohort.tsv gives the patients and survival")
    p.add_argument("--genomics", help="the test cohort's `cmta genomics` folder")
    p.add_argument("--features-dir", help="patch features of the test cohort's slides (models that read slides)")
    p.add_argument("--tiles-summary", help="the test cohort's tiling summary (its slides; failed ones left out)")
    p.add_argument("--train-name", default="train", help="the train cohort's name (labels)")
    p.add_argument("--test-name", default="test", help="the test cohort's name (labels)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the test patients (95%% interval)")
    p.add_argument("--seed", type=int, default=1, help="seed of the bootstrap")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    p.add_argument("-o", "--outdir", required=True, help="folder for risk.tsv, km.png/.svg and external.json")


def run_external(args: argparse.Namespace) -> int:
    from .external import run_external as external

    s = external(args.run_dir, args.cohort, args.test_cohort, args.genomics, args.outdir, args.train_name,
                 args.test_name, args.features_dir, args.tiles_summary, args.n_boot, args.seed, args.device)
    print(f"{s['run']}: trained on {s['train']}, tested on {s['test']} ({s['n_patients']} patients, "
          f"{s['n_events']} events): c-index {s['cindex_harrell']:.4f} (95% CI {s['ci_low']:.4f}-"
          f"{s['ci_high']:.4f}), log-rank p = {s['logrank_p']:.3g}; {s['patients_with_imputed_genes']} "
          f"patient(s) with genes filled by {s['genes_filled_with']}")
    return 0


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "predict": (add_arguments, run),
    "external": (add_external_arguments, run_external),
}
