# Shared by all rules files: config and sheet validation, the slide table, the `cmta` call,
# the resources of each rule, and the input functions of the rules.
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

from cmta_pipeline.modalities import MODALITIES, reads_slides
from cmta_pipeline.protocol import resolve_protocol
from cmta_pipeline.slides import load_slide_table

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
    from cmta_pipeline.demo_cohort import DemoSettings, slide_sheet  # noqa: E402

    SLIDES = slide_sheet(
        DemoSettings.from_config(config["demo"]), config["demo"]["dir"]
    )
else:
    SLIDES = load_slide_table(
        sheet=config["slides"]["sheet"],
        folder=config["slides"]["folder"],
        recursive=config["slides"]["recursive"],
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
    targets += genomics_targets()  # rules/genomics.smk
    targets += train_targets()  # rules/train.smk
    if train_targets():
        targets.append(f"{OUT}/report/cindex_summary.tsv")  # rules/report.smk
    targets += predict_targets()  # rules/predict.smk
    targets += heatmap_targets()  # rules/heatmaps.smk
    if config.get("demo") and train_targets():
        targets.append(f"{OUT}/report/planted_risk.tsv")  # rules/demo.smk
    return targets


# ---- slide stage -------------------------------------------------------------------


def slide_files(ids):
    """The slide files of ``ids``, leaving out missing ones: `cmta tile` then reports them,
    and with slides.on_error: skip the rest of the cohort proceeds. (The demo's slides are
    made by the rule demo_cohort.)"""
    paths = [SLIDES.loc[s, "path"] for s in ids]
    return [p for p in paths if os.path.exists(p) or config.get("demo")]


def slide_input(wildcards):
    return slide_files([wildcards.slide])


def tile_args(wildcards):
    row = SLIDES.loc[wildcards.slide]
    args = f"--slide-id {wildcards.slide} --case-id {shlex.quote(str(row.case_id))} --stain {row.stain}"
    if row.mpp == row.mpp:  # not NaN
        args += f" --mpp {row.mpp}"
    return args


def tiled_slides():
    """Slide ids tiled successfully (evaluated once the checkpoint tile_summary has run)."""
    summary = pd.read_csv(
        checkpoints.tile_summary.get().output.summary, sep="\t", dtype={"slide_id": str}
    )
    return summary.loc[summary["status"] == "ok", "slide_id"].tolist()


# ---- feature stage (rules/features.smk) ------------------------------------------

FEATURES = config["features"]


def gpus_for(device):
    """GPUs a job asks the cluster for: one unless the config says this cluster has none
    (gpu: false) or the stage is set to run on the CPU."""
    return int(bool(config["gpu"]) and device != "cpu")


def extract_threads():
    """Cores of an extraction job: gpu_threads when it asks for a GPU (readers feed it),
    else threads; at least one per configured reader process plus one for the encoder.
    """
    cores = (
        FEATURES["gpu_threads"] if gpus_for(FEATURES["device"]) else FEATURES["threads"]
    )
    return max(cores, (FEATURES["workers"] or 0) + 1)


def feature_targets():
    """Feature files of the slides tiled successfully (after the checkpoint tile_summary)."""
    return expand(f"{OUT}/features/{{slide}}.features.h5", slide=tiled_slides())


def extract_env():
    """The conda env of extraction jobs: CUDA torch when they ask for a GPU."""
    return env_file("torch-cuda") if gpus_for(FEATURES["device"]) else env_file("torch")


def extract_batches():
    """Slide ids in batches of features.slides_per_job, in the slide sheet's order."""
    ids, n = list(SLIDES.index), FEATURES["slides_per_job"]
    return [ids[i : i + n] for i in range(0, len(ids), n)]


def batch_inputs(ids):
    """`cmta extract`'s arguments for a batch, from its inputs: SLIDE COORDS pairs, then
    a --slide-id and a --tile-status per slide (a failed tiling is not read)."""

    def args(wildcards, input):
        pairs, per_slide = [], []
        for s, tiles, status in zip(ids, input.tiles, input.status):
            pairs += [SLIDES.loc[s, "path"], os.path.join(tiles, f"{s}.coords.h5")]
            per_slide += ["--slide-id", s, "--tile-status", status]
        return " ".join(map(shlex.quote, pairs + per_slide))

    return args


def features_weights_input(wildcards):
    """The weights file the job reads: fetched ImageNet weights, a user's file, or none."""
    w = FEATURES["weights"]
    if w == "random":
        return []
    return [FEATURES["weights_file"] if w == "imagenet" else w]


# YAML reads a bare on/off as true/false
COMPILE_MODE = {True: "on", False: "off"}


# Params computed from a job's input, output, threads or resources are not recorded by
# Snakemake, so changing them would not rerun a job (its "params" rerun trigger skips
# them): every *_args function below takes the wildcards only and reads paths from the
# config, so that a changed setting reruns what it changes.


def features_args(wildcards):
    w = FEATURES["weights"]
    weights = features_weights_input(wildcards)
    args = [
        f"--weights {shlex.quote(weights[0] if w != 'random' else 'random')}",
        f"--device {FEATURES['device']}",
        f"--precision {FEATURES['precision']}",
        f"--read-at {FEATURES['read_at']}",
        f"--on-error {FEATURES['on_error']}",
        f"--compile {COMPILE_MODE.get(FEATURES['compile'], FEATURES['compile'])}",
        "--compile-cache "
        + shlex.quote(FEATURES["compile_cache"] or f"{OUT}/cache/inductor"),
        "--no-progress",
    ]
    # unset = sized by cmta extract from the CPUs, /dev/shm and GPU the job gets
    for key in ("batch_size", "workers", "input_px", "compile_min_patches"):
        if FEATURES[key] is not None:
            args.append(f"--{key.replace('_', '-')} {int(FEATURES[key])}")
    return " ".join(args)


def features_threads(wildcards, threads):
    """torch threads on the CPU; a CUDA job's readers take its cores instead."""
    return "" if FEATURES["device"].startswith("cuda") else f"--threads {threads}"


# ---- genomics stage (rules/genomics.smk) ----------------------------------------

GENOMICS = config["genomics"]
COHORT = config["cohort"]
GENOMICS_OUTPUTS = [
    "families.tsv",
    "features.tsv",
    "patients.tsv",
    "dropped.tsv",
    "matrix.tsv.gz",
    "audit.tsv",
]


def genomics_configured():
    return bool(GENOMICS["table"] or GENOMICS["clinical"])


def genomics_targets():
    return [f"{OUT}/cohort/folds.json"] if genomics_configured() else []


def families_file():
    """The configured family file, or the downloaded default (MCAT's signatures.csv)."""
    return GENOMICS["families"] or f"{OUT}/resources/signatures.csv"


def genomics_input(wildcards):
    files = {"families": families_file()}
    for key in (
        "table",
        "rnaseq",
        "cnv",
        "maf",
        "clinical",
        "clinical_samples",
        "gdc_sample_sheet",
        "gene_aliases",
    ):
        if GENOMICS[key]:
            files[key] = GENOMICS[key]
    return files


def genomics_args(wildcards):
    input = genomics_input(wildcards)
    args = [f"--families {shlex.quote(input['families'])}"]
    if GENOMICS["table"]:
        args.insert(0, shlex.quote(input["table"]))
        if GENOMICS["unsuffixed"]:
            args.append(f"--unsuffixed {GENOMICS['unsuffixed']}")
        if GENOMICS["meta_columns"]:
            args.append(
                f"--meta-columns {shlex.quote(','.join(GENOMICS['meta_columns']))}"
            )
    for key in ("rnaseq", "cnv", "maf", "clinical"):
        if GENOMICS[key]:
            args.append(f"--{key} {shlex.quote(input[key])}")
    if GENOMICS["variant_classes"]:
        args.append(
            f"--variant-classes {shlex.quote(','.join(GENOMICS['variant_classes']))}"
        )
    if GENOMICS["table"] and GENOMICS["drop_last_column"]:
        args.append("--drop-last-column")
    if not GENOMICS["table"]:
        for key in ("clinical_samples", "gdc_sample_sheet", "gene_aliases"):
            if GENOMICS[key]:
                args.append(f"--{key.replace('_', '-')} {shlex.quote(input[key])}")
        args.append(f"--rnaseq-unit {GENOMICS['rnaseq_unit']}")
    args.append(f"--missing-survival {GENOMICS['missing_survival']}")
    args.append(f"--nonpositive-followup {GENOMICS['nonpositive_followup']}")
    return " ".join(args)


def cohort_slides(wildcards):
    """The tiling summary (slide list + failed slides) when the cohort uses slides."""
    if COHORT["with_slides"] and len(SLIDES):
        return {"tiles_summary": f"{OUT}/tiles/summary.tsv"}
    return {}


def cohort_args(wildcards):
    args = []
    slides = cohort_slides(wildcards)
    if slides:
        args.append(f"--tiles-summary {shlex.quote(slides['tiles_summary'])}")
    if COHORT["splits"]:
        args.append(f"--splits {shlex.quote(COHORT['splits'])}")
    else:
        args.append(f"--n-folds {COHORT['n_folds']}")
    args.append(f"--seed {COHORT['seed']}")
    args.append(f"--n-bins {COHORT['n_bins']}")
    args.append(f"--labels-from {COHORT['labels_from']}")
    args.append(f"--inner-val-fraction {COHORT['inner_val_fraction']}")
    if COHORT["log1p_rnaseq"]:
        args.append("--log1p-rnaseq")
    if not COHORT["standardize"]:
        args.append("--no-standardize")
    return " ".join(args)


# ---- training stage (rules/train.smk) -------------------------------------------

TRAINING = config["training"]

# Models that read slides (their runs need features and, on a cluster, a GPU).
PATH_MODELS = {name for name in MODALITIES if reads_slides(name)}
ABLATION_FLAGS = {
    "no_cross_attention": "--no-cross-attention",
    "no_alignment": "--no-alignment",
    "no_detach": "--no-detach",
    "no_ppeg": "--no-ppeg",
}


_WARNED = set()


def warn_once(message):
    """Print a planning message once, however often the DAG asks the function again."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(message, file=sys.stderr)


def train_runs():
    runs = list(TRAINING["models"]) + [f"cmta-{a}" for a in TRAINING["ablations"]]
    if not (len(SLIDES) and COHORT["with_slides"]):
        dropped = [r for r in runs if r.split("-")[0] in PATH_MODELS]
        if dropped:
            warn_once(f"training: no slides configured, skipping {', '.join(dropped)}")
        runs = [r for r in runs if r.split("-")[0] not in PATH_MODELS]
    return runs


def train_folds():
    if TRAINING["folds"] is not None:
        return list(TRAINING["folds"])
    if COHORT["splits"]:
        n = len(list(Path(COHORT["splits"]).glob("splits_*.csv")))
        return list(range(n))
    return list(range(COHORT["n_folds"]))


def train_targets(name="summary.json"):
    """File ``name`` (summary.json, predictions.tsv, ...) of every run and fold to train."""
    if not genomics_configured():
        return []
    return expand(
        f"{OUT}/train/{{run}}/fold_{{fold}}/{name}",
        run=train_runs(),
        fold=train_folds(),
    )


def train_input(wildcards):
    files = {"cohort": f"{OUT}/cohort/folds.json", "folds": f"{OUT}/cohort/folds"}
    if wildcards.run.split("-")[0] in PATH_MODELS:
        files["features"] = feature_targets()
    return files


def train_gpus(wildcards):
    """One GPU for the runs of models that read slides, none for genomics-only models."""
    if wildcards.run.split("-")[0] not in PATH_MODELS:
        return 0
    return gpus_for(TRAINING["device"])


def train_args(wildcards):
    model, _, ablation = wildcards.run.partition("-")
    t = TRAINING
    args = [
        f"--model {model}",
        f"--fold {wildcards.fold}",
        f"--size {t['size']} --fusion {t['fusion']} --attention {t['attention']}",
        f"--epochs {t['epochs']} --optimizer {t['optimizer']} --lr {t['lr']}",
        f"--momentum {t['momentum']} --weight-decay {t['weight_decay']}",
        f"--scheduler {t['scheduler']} --grad-accum {t['grad_accum']}",
        f"--alpha {t['alpha']} --similarity {t['similarity']} --censor-weight {t['censor_weight']}",
        f"--l1 {t['l1']}",
        f"--max-train-patches {t['max_train_patches'] or 0} --selection {t['selection']}",
        f"--monitor {t['monitor']} --patience {t['patience']} --min-epochs {t['min_epochs']}",
        f"--seed {t['seed']} --device {t['device']}",
    ]
    if model in PATH_MODELS:
        args.append(f"--features-dir {shlex.quote(os.path.join(OUT, 'features'))}")
    if ablation:
        args.append(ABLATION_FLAGS[ablation])
    if not t["weighted_sampler"]:
        args.append("--no-weighted-sampler")
    if not t["amp"]:
        args.append("--no-amp")
    if t["cache_bags"]:
        args.append("--cache-bags")
    if t["short_exact"]:
        args.append("--short-exact-attention")
    return " ".join(args)


TRAIN_RUN_PATTERN = (
    "(" + "|".join(MODALITIES) + ")(-(" + "|".join(ABLATION_FLAGS) + "))?"
)


# ---- risk for new patients (rules/predict.smk) -----------------------------------

PREDICT = config["predict"]


def predict_runs():
    """Trained runs to predict with; runs that read slides need predict.slides."""
    runs = [r for r in train_runs() if PREDICT["runs"] is None or r in PREDICT["runs"]]
    if not PREDICT["slides"]:
        dropped = [r for r in runs if r.split("-")[0] in PATH_MODELS]
        if dropped:
            warn_once(f"predict: no predict.slides, skipping {', '.join(dropped)}")
        runs = [r for r in runs if r.split("-")[0] not in PATH_MODELS]
    return runs


def predict_targets():
    if not (genomics_configured() and PREDICT["genomics"]):
        return []
    return expand(f"{OUT}/predict/{{run}}/risk.tsv", run=predict_runs())


def predict_genomics_input(wildcards):
    return {"table": PREDICT["genomics"], "families": families_file()}


def predict_genomics_args(wildcards):
    """The new patients' table read as the cohort's (same families, suffixes and metadata),
    without survival."""
    input = predict_genomics_input(wildcards)
    args = [shlex.quote(input["table"]), f"--families {shlex.quote(input['families'])}"]
    if GENOMICS["unsuffixed"]:
        args.append(f"--unsuffixed {GENOMICS['unsuffixed']}")
    if GENOMICS["meta_columns"]:
        args.append(f"--meta-columns {shlex.quote(','.join(GENOMICS['meta_columns']))}")
    if GENOMICS["drop_last_column"]:
        args.append("--drop-last-column")
    args.append("--missing-survival keep")
    return " ".join(args)


def predict_input(wildcards):
    run = f"{OUT}/train/{wildcards.run}"
    files = {
        "cohort": f"{OUT}/cohort/folds.json",
        "genomics": f"{OUT}/predict/genomics/families.tsv",
        "folds": f"{OUT}/cohort/folds",
        "models": expand(f"{run}/fold_{{fold}}/summary.json", fold=train_folds()),
        "weights": expand(f"{run}/fold_{{fold}}/model.pt", fold=train_folds()),
        "predictions": expand(
            f"{run}/fold_{{fold}}/predictions.tsv", fold=train_folds()
        ),
    }
    if wildcards.run.split("-")[0] in PATH_MODELS:
        files["slides"] = PREDICT["slides"]
        if not PREDICT["features_dir"]:
            files["features"] = feature_targets()
    return files


def predict_args(wildcards):
    args = [
        f"--genomics {shlex.quote(os.path.join(OUT, 'predict', 'genomics'))}",
        f"--device {PREDICT['device']}",
        "--threads 1",
    ]
    if wildcards.run.split("-")[0] in PATH_MODELS:
        features = PREDICT["features_dir"] or os.path.join(OUT, "features")
        args.append(
            f"--slides {shlex.quote(PREDICT['slides'])} --features-dir {shlex.quote(features)}"
        )
    if PREDICT["impute_missing_genes"]:
        args.append("--impute-missing-genes")
    return " ".join(args)


# ---- attention heatmaps (rules/heatmaps.smk) -------------------------------------

HEATMAPS = {
    "runs": ["cmta"],
    "cases": None,
    "top_k": 2,
    "threads": 2,
    "mem_mb": 8000,
    "runtime": 60,
    **(config.get("heatmaps") or {}),
}
HEATMAP_MODELS = (
    "cmta",
    "attmil",
    "transmil",
    "dualtrans",
    "clam_sb",
    "clam_mb",
    "porpoise",
)


def heatmap_runs():
    return [
        r
        for r in HEATMAPS["runs"]
        if r in train_runs() and r.split("-")[0] in HEATMAP_MODELS
    ]


def heatmap_targets():
    """One heatmaps.tsv per run to draw (add to final_targets in common.smk)."""
    if not train_targets():
        return []
    return expand(f"{OUT}/heatmaps/{{run}}/heatmaps.tsv", run=heatmap_runs())


def heatmap_args(wildcards):
    if HEATMAPS["cases"]:
        cases = ",".join(map(str, HEATMAPS["cases"]))
        return f"--cases {shlex.quote(cases)}"
    return f"--top-k {int(HEATMAPS['top_k'])}"
