# What every rules file needs: the config and its validation, this workflow's source and
# version, the `cmta` call and conda envs, the slide sheet, the output folder and the final
# targets. Each stage's input and argument functions live in rules/functions/<stage>.smk,
# which that stage's rules file, rules/<stage>.smk, includes (docs/architecture.md); the
# functions of this file are in rules/functions/common.smk.
import ast
import hashlib
import importlib.util
import json
import os
import re
import shlex
import sys
import warnings
from pathlib import Path

import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.sourcecache import HostingProviderFile, LocalGitFile, LocalSourceFile
from snakemake.utils import validate

# Snakemake's own warning, in every dry run (snakemake/snakemake#4280, open): its default
# resources (disk_mb from input.size_mb) are evaluated while the DAG is built, and the size
# coroutine it gives up on (rules.py, NestedCoroutineError) is never awaited. Only that one.
warnings.filterwarnings(
    "ignore",
    message=r"coroutine 'InputFiles\._predicated_size_files\.<locals>\.sizes' was never awaited",
    category=RuntimeWarning,
)

# This workflow's own source, found from this file (not from the working directory or the
# main Snakefile), so that it is right when the workflow is used as a module: a folder, a
# commit of a local git repository ("git+file:///repo/workflow/Snakefile@<ref>") or a tag
# or commit of a hosted one (github(...)). A Snakemake SourceFile, not a path: its files
# are read through Snakemake's source cache (source_text), which fetches them when remote.
SOURCE = workflow.current_basedir.join("../..")
if isinstance(SOURCE, LocalSourceFile):
    SOURCE = LocalSourceFile(
        os.path.realpath(SOURCE.get_path_or_uri(secret_free=False))
    )


include: "functions/common.smk"


# The schema is the one source of defaults: validate fills every key the config leaves out.
config.update(
    config_from_cli(
        dict(config),
        yaml.safe_load(source_text("workflow/schemas/config.schema.yaml")),
    )
)
check_cohort_names(config)
validate(config, schema="../schemas/config.schema.yaml")

VERSION = source_version()
PACKAGE = package_source()  # (pip requirement, editable)
# What this source writes into the working folder: its conda env files and, for a module
# from git, the torch-free modules that planning imports.
GENERATED = Path(
    ".snakemake",
    "cmta",
    f"{VERSION}-{hashlib.sha256(PACKAGE[0].encode()).hexdigest()[:12]}",
).resolve()
CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
if not CONDA:
    check_job_package()

# Snakemake plans with this workflow's own cmta_pipeline (the slide sheet, the model table,
# the protocol), imported from its source: only its torch-free modules, so the Python that
# runs Snakemake needs pandas, not torch or OpenCV (tests/test_deployment.py checks it).
PLANNING_MODULES = [
    "cmta_pipeline.report.protocol",
    "cmta_pipeline.slides.sheet",
    "cmta_pipeline.modalities",
    "cmta_pipeline.demo.settings",
    "cmta_pipeline.features.encoders.registry",
]
sys.path.insert(0, planning_package())
import cmta_pipeline

if cmta_pipeline.__version__ != VERSION:
    raise WorkflowError(
        f"this Snakemake process already imported cmta_pipeline {cmta_pipeline.__version__} "
        f"({cmta_pipeline.__file__}); this workflow is {VERSION}"
    )
from cmta_pipeline.report.protocol import resolve_protocol
from cmta_pipeline.slides.table import load_slide_table

# protocol: paper sets the authors' evaluation (cohort.labels_from, training.selection,
# training.alpha); every setting it changes is printed, marked OPTIMISTIC.
# With several cohorts each cohort's part resolves it (its study sets alpha), not the run.
if not config["cohorts"]:
    _resolved, _protocol_notes = resolve_protocol(config)
    config.update(_resolved)
    if _protocol_notes:
        print("\n".join(_protocol_notes), file=sys.stderr)

# Rules call the `cmta` command line: with --use-conda the python of the rule's env (which
# installed this workflow's package, env_file), else the interpreter running Snakemake.
CMTA = f"{'python' if CONDA else shlex.quote(sys.executable)} -m cmta_pipeline"

OUT = config["outdir"].rstrip("/")
# Several cohorts (config cohorts:): each is this workflow as a Snakemake module with its
# own config, outdir <OUT>/<name> and parent_outdir <OUT> (the Snakefile). Tiles and
# features of every slide are this run's, at SHARED/tiles and SHARED/features: the top
# level of a run of several cohorts, or a run of one cohort, tiles and encodes; a cohort's
# part of a run (parent_outdir set) reads them.
COHORTS = cohort_configs(config)
SHARED = (config["parent_outdir"] or OUT).rstrip("/")
OWNS_SLIDES = SHARED == OUT
# The encoders (features.encoders, or features.encoder alone), the tiles each one's
# geometry needs and where its features go: resnet50 tiles/ and features/; another encoder
# features/<encoder>/, and tiles_<geometry>/ unless it shares the tiling's geometry
# (docs/features.md). ENCODER, TILES, FEATURES_OUT and TILING are the first encoder's (a
# run of one encoder: today's), TILES and FEATURES_OUT the run's (SHARED); TILES_HERE holds
# this cohort's tiling summary. The rules of tiles and features take every encoder's
# through two wildcards: {geometry} (tiles{geometry}/: "" or _<geometry>) and
# {encoder_dir} (features{encoder_dir}/: "" for resnet50, /<encoder> for the others).
ENCODERS = config_encoders(config)
LAYOUTS = {e: encoder_layout(config, SHARED, e) for e in ENCODERS}
ENCODER, TILES, FEATURES_OUT, TILING = LAYOUTS[ENCODERS[0]]
TILES_HERE = f"{OUT}/{os.path.basename(TILES)}"
GEOMETRY = {e: os.path.basename(v[1]).removeprefix("tiles") for e, v in LAYOUTS.items()}
ENCODER_DIR = {e: v[2].removeprefix(f"{SHARED}/features") for e, v in LAYOUTS.items()}
TILINGS = {GEOMETRY[e]: v[3] for e, v in LAYOUTS.items()}
TILES_WC = f"{SHARED}/tiles{{geometry}}"
FEATURES_WC = f"{SHARED}/features{{encoder_dir}}"

if COHORTS:
    SLIDES = union_slide_table({name: slide_table(c) for name, c in COHORTS.items()})
else:
    SLIDES = slide_table(config)
# slide ids follow cmta_pipeline/ids.py (checked by load_slide_table); the look-ahead keeps a
# slide wildcard, and so tiles/{slide}/, from ever being . or .. whatever the sheet says
SLIDE_PATTERN = r"(?!\.\.?(?:/|$))(?:%s)" % (
    "|".join(map(re.escape, SLIDES.index)) if len(SLIDES) else "NO_SLIDES"
)

# gpu: true (a cluster whose GPU jobs go to GPU nodes), false (none), or auto (the default:
# true when the host that plans the run has an NVIDIA GPU).
GPU = resolve_gpu(config["gpu"])


def final_targets():
    if (
        COHORTS
    ):  # several cohorts: each one's targets (its module's rule all) and table 1
        targets = tile_summaries() + picture_targets()  # rules/slides.smk
        for name in COHORTS:
            targets += getattr(rules, f"{name}_all").input
        return targets + table1_targets()  # rules/report.smk
    targets = tile_summaries() + picture_targets()  # rules/slides.smk
    targets += cohort_targets()  # rules/cohort.smk
    targets += train_targets()  # rules/training.smk
    if train_targets():
        targets.append(f"{OUT}/report/cindex_summary.tsv")  # rules/report.smk
        targets += floor_targets()  # rules/training.smk: the table's linear floor
        targets += table1_targets()  # rules/report.smk
    targets += predict_targets()  # rules/predict.smk
    targets += heatmap_targets()  # rules/heatmaps.smk
    if config.get("demo") and train_targets():
        targets.append(f"{OUT}/report/planted_risk.tsv")  # rules/demo.smk
    return targets
