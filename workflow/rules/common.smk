# Shared by all rules files: config and sheet validation, the slide table, the `cmta` call,
# and the input functions of the rules.
import json
import os
import re
import shlex
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

if config.get("demo"):
    # The demo cohort's slides are written by rules/demo.smk; their names are known before.
    from cmta_pipeline.demo_cohort import DemoSettings, slide_sheet  # noqa: E402

    SLIDES = slide_sheet(DemoSettings.from_config(config["demo"]), config["demo"]["dir"])
else:
    SLIDES = load_slide_table(
        sheet=config["slides"].get("sheet"),
        folder=config["slides"].get("folder"),
        recursive=config["slides"].get("recursive", False),
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


def env_file(name):
    return str(REPO_ROOT / "envs" / f"{name}.yaml")


def final_targets():
    targets = [f"{OUT}/tiles/summary.tsv"]
    targets += genomics_targets()  # rules/genomics.smk
    targets += train_targets()  # rules/train.smk
    if train_targets():
        targets.append(f"{OUT}/report/cindex_summary.tsv")  # rules/report.smk
    targets += predict_targets()  # rules/predict.smk
    if config.get("demo") and train_targets():
        targets.append(f"{OUT}/report/planted_risk.tsv")  # rules/demo.smk
    return targets


# ---- slide stage -------------------------------------------------------------------


def slide_input(wildcards):
    """The slide file, or nothing if it is missing: `cmta tile` then reports it, and with
    slides.on_error: skip the rest of the cohort proceeds."""
    path = SLIDES.loc[wildcards.slide, "path"]
    return [path] if os.path.exists(path) or config.get("demo") else []


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

FEATURES = {
    "weights": "imagenet",
    "weights_file": "resources/weights/resnet50-0676ba61.pth",
    "device": "auto",
    "batch_size": 32,
    "workers": 1,
    "threads": 2,
    "precision": "auto",
    "input_px": None,
    "read_at": "coords",
    "on_error": "fail",
    "mem_mb": 8000,
    "runtime": 120,
    **config.get("features", {}),
}


def feature_targets():
    """Feature files of the slides tiled successfully (after the checkpoint tile_summary)."""
    return expand(f"{OUT}/features/{{slide}}.features.h5", slide=tiled_slides())


def features_weights_input(wildcards):
    """The weights file the job reads: fetched ImageNet weights, a user's file, or none."""
    w = FEATURES["weights"]
    if w == "random":
        return []
    return [FEATURES["weights_file"] if w == "imagenet" else w]


def features_args(wildcards, input, threads):
    w = FEATURES["weights"]
    args = [
        f"--weights {shlex.quote(input.weights[0] if w != 'random' else 'random')}",
        f"--device {FEATURES['device']}",
        f"--batch-size {FEATURES['batch_size']}",
        f"--workers {FEATURES['workers']}",
        f"--threads {threads}",
        f"--precision {FEATURES['precision']}",
        f"--read-at {FEATURES['read_at']}",
        f"--on-error {FEATURES['on_error']}",
        "--no-progress",
    ]
    if FEATURES.get("input_px"):
        args.append(f"--input-px {int(FEATURES['input_px'])}")
    return " ".join(args)


# ---- genomics stage (rules/genomics.smk) ----------------------------------------

GENOMICS = config.get("genomics", {})
COHORT = config.get("cohort", {})
GENOMICS_OUTPUTS = ["families.tsv", "features.tsv", "patients.tsv", "dropped.tsv", "matrix.tsv.gz"]


def genomics_configured():
    return bool(GENOMICS.get("table") or GENOMICS.get("clinical"))


def genomics_targets():
    return [f"{OUT}/cohort/folds.json"] if genomics_configured() else []


def families_file():
    """The configured family file, or the downloaded default (MCAT's signatures.csv)."""
    return GENOMICS.get("families") or f"{OUT}/resources/signatures.csv"


def genomics_input(wildcards):
    files = {"families": families_file()}
    for key in ("table", "rnaseq", "cnv", "maf", "clinical"):
        if GENOMICS.get(key):
            files[key] = GENOMICS[key]
    return files


def genomics_args(wildcards, input):
    args = [f"--families {shlex.quote(input.families)}"]
    if GENOMICS.get("table"):
        args.insert(0, shlex.quote(input.table))
        if GENOMICS.get("unsuffixed"):
            args.append(f"--unsuffixed {GENOMICS['unsuffixed']}")
        if GENOMICS.get("meta_columns"):
            args.append(f"--meta-columns {shlex.quote(','.join(GENOMICS['meta_columns']))}")
    for key in ("rnaseq", "cnv", "maf", "clinical"):
        if GENOMICS.get(key):
            args.append(f"--{key} {shlex.quote(input[key])}")
    if GENOMICS.get("variant_classes"):
        args.append(f"--variant-classes {shlex.quote(','.join(GENOMICS['variant_classes']))}")
    args.append(f"--missing-survival {GENOMICS.get('missing_survival', 'error')}")
    return " ".join(args)


def cohort_slides(wildcards):
    """The tiling summary (slide list + failed slides) when the cohort uses slides."""
    if COHORT.get("with_slides", True) and len(SLIDES):
        return {"tiles_summary": f"{OUT}/tiles/summary.tsv"}
    return {}


def cohort_args(wildcards, input):
    args = []
    if "tiles_summary" in input.keys():
        args.append(f"--tiles-summary {shlex.quote(input.tiles_summary)}")
    if COHORT.get("splits"):
        args.append(f"--splits {shlex.quote(COHORT['splits'])}")
    else:
        args.append(f"--n-folds {COHORT.get('n_folds', 5)}")
    args.append(f"--seed {COHORT.get('seed', 1)}")
    args.append(f"--n-bins {COHORT.get('n_bins', 4)}")
    args.append(f"--labels-from {COHORT.get('labels_from', 'train')}")
    args.append(f"--inner-val-fraction {COHORT.get('inner_val_fraction', 0.0)}")
    if COHORT.get("log1p_rnaseq", False):
        args.append("--log1p-rnaseq")
    if not COHORT.get("standardize", True):
        args.append("--no-standardize")
    return " ".join(args)


# ---- training stage (rules/train.smk) -------------------------------------------

TRAINING = {
    "models": [],
    "ablations": [],
    "folds": None,
    "size": "small",
    "fusion": "concat",
    "attention": "nystrom",
    "epochs": 30,
    "optimizer": "sgd",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 1e-5,
    "scheduler": "none",
    "grad_accum": 1,
    "alpha": 1.0,
    "similarity": "l1",
    "censor_weight": 0.0,
    "l1": 0.0,
    "weighted_sampler": True,
    "max_train_patches": 4096,
    "selection": "final",
    "monitor": "loss",
    "patience": 5,
    "min_epochs": 5,
    "seed": 1,
    "device": "auto",
    "amp": True,
    "threads": 2,
    "cache_bags": False,
    "mem_mb": 16000,
    "runtime": 720,
    **config.get("training", {}),
}

PATH_MODELS = {"cmta", "meanmil", "maxmil", "attmil", "transmil", "dualtrans"}
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
    if not (len(SLIDES) and COHORT.get("with_slides", True)):
        dropped = [r for r in runs if r.split("-")[0] in PATH_MODELS]
        if dropped:
            warn_once(f"training: no slides configured, skipping {', '.join(dropped)}")
        runs = [r for r in runs if r.split("-")[0] not in PATH_MODELS]
    return runs


def train_folds():
    if TRAINING["folds"] is not None:
        return list(TRAINING["folds"])
    if COHORT.get("splits"):
        n = len(list(Path(COHORT["splits"]).glob("splits_*.csv")))
        return list(range(n))
    return list(range(COHORT.get("n_folds", 5)))


def train_targets():
    if not genomics_configured():
        return []
    return expand(
        f"{OUT}/train/{{run}}/fold_{{fold}}/summary.json", run=train_runs(), fold=train_folds()
    )


def train_input(wildcards):
    files = {"cohort": f"{OUT}/cohort/folds.json"}
    if wildcards.run.split("-")[0] in PATH_MODELS:
        files["features"] = feature_targets()
    return files


def train_args(wildcards, threads):
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
        f"--max-train-patches {t['max_train_patches']} --selection {t['selection']}",
        f"--monitor {t['monitor']} --patience {t['patience']} --min-epochs {t['min_epochs']}",
        f"--seed {t['seed']} --device {t['device']} --threads {threads}",
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
    return " ".join(args)


TRAIN_RUN_PATTERN = "[a-z]+(-(" + "|".join(ABLATION_FLAGS) + "))?"


# ---- risk for new patients (rules/predict.smk) -----------------------------------

PREDICT = {
    "genomics": None,
    "slides": None,
    "features_dir": None,
    "runs": None,
    "impute_missing_genes": False,
    "device": "cpu",
    "mem_mb": 8000,
    "runtime": 60,
    **(config.get("predict") or {}),
}


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


def predict_genomics_args(wildcards, input):
    """The new patients' table read as the cohort's (same families, suffixes and metadata),
    without survival."""
    args = [shlex.quote(input.table), f"--families {shlex.quote(input.families)}"]
    if GENOMICS.get("unsuffixed"):
        args.append(f"--unsuffixed {GENOMICS['unsuffixed']}")
    if GENOMICS.get("meta_columns"):
        args.append(f"--meta-columns {shlex.quote(','.join(GENOMICS['meta_columns']))}")
    args.append("--missing-survival keep")
    return " ".join(args)


def predict_input(wildcards):
    run = f"{OUT}/train/{wildcards.run}"
    files = {
        "cohort": f"{OUT}/cohort/folds.json",
        "genomics": f"{OUT}/predict/genomics/families.tsv",
        "models": expand(f"{run}/fold_{{fold}}/summary.json", fold=train_folds()),
    }
    if wildcards.run.split("-")[0] in PATH_MODELS:
        files["slides"] = PREDICT["slides"]
        if not PREDICT["features_dir"]:
            files["features"] = feature_targets()
    return files


def predict_args(wildcards, input):
    args = [f"--genomics {shlex.quote(os.path.dirname(input.genomics))}",
            f"--device {PREDICT['device']}", "--threads 1"]
    if "slides" in input.keys():
        features = PREDICT["features_dir"] or os.path.join(OUT, "features")
        args.append(f"--slides {shlex.quote(input.slides)} --features-dir {shlex.quote(features)}")
    if PREDICT["impute_missing_genes"]:
        args.append("--impute-missing-genes")
    return " ".join(args)
