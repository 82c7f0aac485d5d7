# What every rules file needs: the config and its validation, this workflow's source and
# version, the `cmta` call and conda envs, the slide sheet, the output folder and the final
# targets. Each stage's input and argument functions live in rules/functions/<stage>.smk,
# which that stage's rules file, rules/<stage>.smk, includes (docs/architecture.md).
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

# The schema is the one source of defaults: validate fills every key the config leaves out.
validate(config, schema="../schemas/config.schema.yaml")

# This workflow's own source folder, found from this file (not from the working directory
# or the main Snakefile), so that it is right when the workflow is used as a module.
SOURCE = Path(str(workflow.current_basedir)).parents[1]
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (SOURCE / "cmta_pipeline" / "__init__.py").read_text(),
    re.M,
).group(1)

# Snakemake itself reads the slide sheet and the model table with this package: it must be
# the workflow's own (an installed release of the same version, or this very checkout).
try:
    import cmta_pipeline
except ImportError:
    raise WorkflowError(
        f"cmta_pipeline is not installed in the Python that runs Snakemake ({sys.executable}): "
        f"pip install -e {SOURCE}"
    )
_IMPORTED = Path(cmta_pipeline.__file__).resolve().parents[1]
if cmta_pipeline.__version__ != VERSION or (
    (_IMPORTED / "pyproject.toml").exists() and _IMPORTED != SOURCE.resolve()
):
    raise WorkflowError(
        f"the cmta_pipeline that Snakemake imports ({_IMPORTED}, version "
        f"{cmta_pipeline.__version__}) is not this workflow's ({SOURCE}, version {VERSION}): "
        f"pip install -e {SOURCE} in the environment that runs Snakemake"
    )

from cmta_pipeline.report.protocol import resolve_protocol
from cmta_pipeline.slides.table import load_slide_table

# protocol: paper sets the authors' evaluation (cohort.labels_from, training.selection,
# training.alpha); every setting it changes is printed, marked OPTIMISTIC.
_resolved, _protocol_notes = resolve_protocol(config)
config.update(_resolved)
if _protocol_notes:
    print("\n".join(_protocol_notes), file=sys.stderr)

# Rules call the `cmta` command line. With --use-conda each env of envs/ installs this
# workflow's source (editable, by its post-deploy script, which reads CMTA_WORKFLOW_SOURCE);
# without it the interpreter running Snakemake runs the jobs, so a venv need not be activated.
os.environ.update(CMTA_WORKFLOW_SOURCE=str(SOURCE))
_PYTHON = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else sys.executable
)
CMTA = f"{_PYTHON} -m cmta_pipeline"


def env_file(name):
    """The conda env of envs/<name>.yaml in this workflow's source."""
    return str(SOURCE / "envs" / f"{name}.yaml")


def scaled_mem(mem_mb):
    """mem_mb that grows with each retry (the SLURM profile sets retries: 1)."""
    return lambda wildcards, attempt: int(mem_mb) * attempt


OUT = config["outdir"].rstrip("/")

if config.get("demo"):
    # The demo cohort's slides are written by rules/demo.smk; their names are known before.
    from cmta_pipeline.demo.cohort import DemoSettings, slide_sheet  # noqa: E402

    SLIDES = slide_sheet(
        DemoSettings.from_config(config["demo"]), config["demo"]["dir"]
    )
else:
    SLIDES = load_slide_table(
        sheet=config["slides"]["sheet"],
        folder=config["slides"]["folder"],
        recursive=config["slides"]["recursive"],
        gdc_sample_sheet=config["slides"]["gdc_sample_sheet"],
        gdc_manifest=config["slides"]["gdc_manifest"],
    )
validate(SLIDES, schema="../schemas/slides.schema.yaml")
SLIDES = SLIDES.set_index("slide_id", drop=False)
if SLIDES.empty:
    print(
        "slides: the slide sheet lists no slides; point slides.sheet or slides.folder in "
        "config/config.yaml at your slides (README: 'Your data')",
        file=sys.stderr,
    )

SLIDE_PATTERN = "|".join(map(re.escape, SLIDES.index)) if len(SLIDES) else "NO_SLIDES"


def final_targets():
    targets = [f"{OUT}/tiles/summary.tsv"]
    targets += cohort_targets()  # rules/cohort.smk
    targets += train_targets()  # rules/training.smk
    if train_targets():
        targets.append(f"{OUT}/report/cindex_summary.tsv")  # rules/report.smk
    targets += predict_targets()  # rules/predict.smk
    targets += heatmap_targets()  # rules/heatmaps.smk
    if config.get("demo") and train_targets():
        targets.append(f"{OUT}/report/planted_risk.tsv")  # rules/demo.smk
    return targets


_WARNED = set()


def warn_once(message):
    """Print a planning message once, however often the DAG asks the function again."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(message, file=sys.stderr)


def gpus_for(device):
    """GPUs a job asks the cluster for: one unless the config says this cluster has none
    (gpu: false) or the stage is set to run on the CPU."""
    return int(bool(config["gpu"]) and device != "cpu")
