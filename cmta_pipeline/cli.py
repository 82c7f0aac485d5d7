"""The ``cmta`` command line: one subcommand per pipeline stage.

Each command belongs to one stage package, whose ``cli.py`` maps the command's name to
``(add_arguments(parser), run(args) -> int)`` in ``COMMANDS``. A stage's ``cli.py`` is
imported only when one of its commands runs, so ``cmta tile`` does not pay for importing
torch.
Errors of type :class:`CMTAError` become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import CMTAError

# command name -> the stage package whose cli.py runs it (docs/architecture.md)
COMMANDS: dict[str, str] = {
    "slides": "slides",
    "tile": "slides",
    "tile-summary": "slides",
    "tile-qc": "slides",
    "extract": "features",
    "fetch-weights": "features",
    "encoders": "features",
    "genomics": "genomics",
    "cohort": "cohort",
    "train": "training",
    "predict": "predict",
    "report": "report",
    "compare": "report",
    "table1": "report",
    "external": "predict",
    "heatmap": "heatmaps",
    "demo-cohort": "demo",
    "demo-encoder": "demo",
    "demo-summary": "demo",
}

# one-line help shown by `cmta --help` without importing every module
HELP: dict[str, str] = {
    "slides": "build or check a slide sheet (slide_id, case_id, path, mpp, stain) from a folder",
    "tile": "tissue segmentation and the 512 px @ 40x patch grid of one slide",
    "tile-summary": "collect per-slide tiling status into summary.tsv and failed_slides.tsv",
    "tile-qc": "draw the QC pictures of tiled slides again at another size (tiling.qc_max_px)",
    "extract": "patch features of one slide (ResNet-50 layer3 1024-d, or --encoder NAME)",
    "fetch-weights": "download an encoder's weights once (ImageNet ResNet-50 by default), for offline nodes",
    "encoders": "list the registered patch encoders: dimension, geometry, weights, licence",
    "genomics": "genomic profiles grouped into the six gene families",
    "cohort": "join slides, genomics and survival; labels and cross-validation folds",
    "train": "train one model on one cross-validation fold",
    "predict": "risk for new patients from the fold models of a trained run",
    "report": "survival metrics (Harrell, Uno, AUC(t), IBS), Kaplan-Meier figures and summaries of trained runs",
    "compare": "Table 1 layout (models x cohorts, mean +- sd) of several reports: TSV, Markdown, figure",
    "table1": "Table 1 (models x cohorts, honest and paper protocols apart) with paired c-index comparisons",
    "external": "external validation: a run's fold ensemble trained on one cohort predicts and scores another",
    "heatmap": "attention heatmaps (each gene family, the pathology class token) over held-out patients' slides",
    "demo-cohort": "write the synthetic demo cohort: slides, six-family genomics and survival with planted risk",
    "demo-encoder": "the demo's encoder: random ResNet-50 weights with BatchNorm statistics from the slides' patches",
    "demo-summary": "the demo's c-index table: every run beside the planted risk (oracle), fold by fold",
}


def load_command(name: str):
    """(add_arguments, run) of command ``name``, from its stage's cli.py."""
    stage = importlib.import_module(f"cmta_pipeline.{COMMANDS[name]}.cli")
    return stage.COMMANDS[name]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmta",
        description="CMTA pipeline: whole-slide images and genomics to survival risk, one stage per command.",
    )
    parser.add_argument("--version", action="version", version=f"cmta {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only import the module of the command being run (and all of them for --help).
    wanted = None
    if argv:
        wanted = next((a for a in argv if a in COMMANDS), None)
    for name in COMMANDS:
        p = sub.add_parser(name, help=HELP.get(name, ""), description=HELP.get(name, ""))
        if wanted is None or name == wanted:
            add_arguments, run = load_command(name)
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("numexpr").setLevel(logging.WARNING)
    if not args.command:
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except CMTAError as exc:
        print(f"cmta {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cmta {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
