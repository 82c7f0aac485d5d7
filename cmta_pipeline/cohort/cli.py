"""`cmta cohort`: join slides, genomics and survival; labels and cross-validation folds."""

from __future__ import annotations

import argparse
import logging

# ---- cmta cohort ----------------------------------------------------------------


log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("genomics_dir", help="output folder of `cmta genomics`")
    p.add_argument("-o", "--outdir", required=True, help="output folder (cohort.tsv, audit.tsv, folds/, folds.json)")
    p.add_argument("--slides", help="slide sheet (slide_id, case_id, ...); omit for a genomics-only cohort")
    p.add_argument(
        "--tiles-summary",
        help="tiling summary (slide_id, case_id, status, n_patches, reason): failed slides are "
        "not usable; without --slides it is also the slide list",
    )
    p.add_argument("--splits", help="folder of splits_<k>.csv (',train,val' layout); default: make folds")
    p.add_argument("--n-folds", type=int, default=5, help="folds to make when --splits is not given (default 5)")
    p.add_argument("--split-by", choices=["patient", "site"], default="patient",
                   help="patient: folds stratified by event x time bin (default); site: site-preserved "
                        "folds, each site's patients held out together (site from a 'site' column of "
                        "--slides or of the patients table, else the TCGA barcode TCGA-XX-...)")
    p.add_argument("--site-sheet", help="a sheet (TSV: case_id, site) whose site column --split-by site "
                   "reads (the slide sheet of the config; default: --slides)")
    p.add_argument("--n-bins", type=int, default=4, help="survival time bins (default 4)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fold and inner-validation draws (default 1)")
    p.add_argument(
        "--labels-from", choices=["train", "all"], default="train",
        help="fit bin edges on each fold's train rows (default, honest) or on the whole cohort (published protocol)",
    )
    p.add_argument(
        "--inner-val-fraction", type=float, default=0.0,
        help="fraction of each training fold set aside as inner validation for early stopping (default 0 = none)",
    )
    p.add_argument("--log1p-rnaseq", action="store_true", help="log1p RNA-seq values before scaling (raw counts/TPM)")
    p.add_argument("--no-standardize", action="store_true", help="do not z-score the features")
    p.add_argument("--keep-constant", action="store_true",
                   help="keep features constant on a fold's train rows (centred, scale 1), as the "
                        "authors' code does (protocol: paper); default: drop them")


def run(args: argparse.Namespace) -> int:
    from .build import build_cohort

    summary = build_cohort(
        args.genomics_dir, args.outdir, slide_sheet=args.slides, tiles_summary=args.tiles_summary,
        n_folds=args.n_folds, n_bins=args.n_bins, seed=args.seed, splits=args.splits,
        labels_from=args.labels_from, inner_val_fraction=args.inner_val_fraction,
        log1p_rnaseq=args.log1p_rnaseq, standardize=not args.no_standardize,
        drop_constant=not args.keep_constant, split_by=args.split_by,
        site_sheet=args.site_sheet,
    )
    log.info(
        "%d patients kept, %d dropped, %d folds -> %s/folds.json",
        summary["n_patients"], summary["n_dropped"], summary["n_folds"], args.outdir,
    )
    return 0


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "cohort": (add_arguments, run),
}
