"""``cmta heatmap``: attention heatmaps of held-out patients' slides from a trained run."""

from __future__ import annotations

import argparse

from ..fileio import Glob

# ---- cmta heatmap ---------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="a trained run: fold_<k>/model.pt and predictions.tsv")
    p.add_argument("--cohort", required=True, help="the `cmta cohort` folder the run was trained on")
    p.add_argument("--features-dir", required=True, help="patch-feature folder (<slide_id>.features.h5 with coords)")
    p.add_argument("--slides", help="slide sheet (slide_id, path) for the thumbnails")
    p.add_argument("--tiles-dir", help="`cmta tile` folder: the thumbnails' slide files are the "
                                        "slide_path of each <slide_id>.coords.h5 (when --slides is not given)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cases", help="comma-separated case ids (each drawn by the fold model that held it out)")
    which.add_argument("--top-k", type=int, default=2,
                       help="without --cases: the k highest- and k lowest-risk held-out patients (default 2)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("-o", "--outdir", required=True,
                   help="folder for <slide_id>.attention.h5, <slide_id>.heatmap.png and heatmaps.tsv")


#: What ``cmta heatmap`` writes besides heatmaps.tsv, its completion marker (written last).
OUTPUTS = (Glob("*.attention.h5"), Glob("*.heatmap.png"))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..fileio import fresh_outputs

    if args.threads:
        torch.set_num_threads(args.threads)
    # the previous run's heatmaps.tsv, then its maps: a failed run leaves none of them
    with fresh_outputs(Path(args.outdir), OUTPUTS, marker="heatmaps.tsv") as out:
        write_heatmaps(args, out)
    return 0


def write_heatmaps(args: argparse.Namespace, out) -> None:
    """The maps of the chosen patients' slides, then heatmaps.tsv."""
    import pandas as pd

    from ..errors import CMTAError
    from ..fileio import atomic_output
    from .maps import choose_cases, heatmaps_for_case, slide_paths_from_tiles

    slide_paths = None
    if args.slides:
        try:
            sheet = pd.read_csv(args.slides, sep="\t", dtype=str)
        except (OSError, ValueError) as exc:
            raise CMTAError(f"{args.slides}: unreadable slide sheet ({exc})") from None
        missing = {"slide_id", "path"} - set(sheet.columns)
        if missing:
            raise CMTAError(f"{args.slides}: missing column(s) {', '.join(sorted(missing))}")
        slide_paths = dict(zip(sheet["slide_id"], sheet["path"]))
    elif args.tiles_dir:
        slide_paths = slide_paths_from_tiles(args.tiles_dir)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    if cases is None and args.top_k < 1:
        raise CMTAError("--top-k must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case, fold, why in choose_cases(args.run_dir, cases, args.top_k):
        rows += heatmaps_for_case(args.run_dir, args.cohort, case, fold, args.features_dir, out,
                                  slide_paths, why)
    with atomic_output(out / "heatmaps.tsv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False, float_format="%.6g")


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "heatmap": (add_arguments, run),
}
