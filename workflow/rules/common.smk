# Shared by all rules files: config and sheet validation, the slide table, the `cmta` call,
# and the input functions of the rules.
import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

REPO_ROOT = Path(workflow.basedir).parent
sys.path.insert(0, str(REPO_ROOT))

from cmta_pipeline.slides import load_slide_table  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")

# Rules call the `cmta` command line as `python -m cmta_pipeline`, with this checkout on the
# module path so that it also runs inside the conda envs of envs/. Without --use-conda the
# interpreter running Snakemake is used, so a venv need not be activated.
_PYTHON = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else sys.executable
)
CMTA = f"env PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}} {_PYTHON} -m cmta_pipeline"

OUT = config["outdir"].rstrip("/")

SLIDES = load_slide_table(
    sheet=config["slides"].get("sheet"),
    folder=config["slides"].get("folder"),
    recursive=config["slides"].get("recursive", False),
)
validate(SLIDES, schema="../schemas/slides.schema.yaml")
SLIDES = SLIDES.set_index("slide_id", drop=False)

SLIDE_PATTERN = "|".join(map(re.escape, SLIDES.index)) if len(SLIDES) else "NO_SLIDES"


def env_file(name):
    return str(REPO_ROOT / "envs" / f"{name}.yaml")


def final_targets():
    targets = [f"{OUT}/tiles/summary.tsv"]
    return targets


# ---- slide stage -------------------------------------------------------------------


def slide_input(wildcards):
    """The slide file, or nothing if it is missing: `cmta tile` then reports it, and with
    slides.on_error: skip the rest of the cohort proceeds."""
    path = SLIDES.loc[wildcards.slide, "path"]
    return [path] if os.path.exists(path) else []


def tile_args(wildcards):
    row = SLIDES.loc[wildcards.slide]
    args = f"--slide-id {wildcards.slide} --case-id {row.case_id} --stain {row.stain}"
    if row.mpp == row.mpp:  # not NaN
        args += f" --mpp {row.mpp}"
    return args


def tiled_slides():
    """Slide ids tiled successfully (evaluated once the checkpoint tile_summary has run)."""
    summary = pd.read_csv(
        checkpoints.tile_summary.get().output.summary, sep="\t", dtype={"slide_id": str}
    )
    return summary.loc[summary["status"] == "ok", "slide_id"].tolist()
