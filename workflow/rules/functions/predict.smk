# Input and argument functions of the predict stage's rules (rules/predict.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.

PREDICT = config["predict"]


def predict_runs():
    """Trained runs to predict with; runs that read slides need predict.slides."""
    runs = [r for r in train_runs() if PREDICT["runs"] is None or r in PREDICT["runs"]]
    # the first encoder's runs: predict.features_dir holds one encoder's features
    runs = [r for r in runs if "@" not in r]
    # linear models (coxnet) keep no network for cmta predict
    runs = [r for r in runs if r.split("-")[0] not in LINEAR_MODELS]
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
            files["features"] = feature_targets(ENCODER)
    return files


def predict_args(wildcards):
    args = [
        f"--genomics {shlex.quote(os.path.join(OUT, 'predict', 'genomics'))}",
        f"--device {PREDICT['device']}",
        "--threads 1",
    ]
    if wildcards.run.split("-")[0] in PATH_MODELS:
        features = PREDICT["features_dir"] or FEATURES_OUT
        args.append(
            f"--slides {shlex.quote(PREDICT['slides'])} --features-dir {shlex.quote(features)}"
        )
    if PREDICT["impute_missing_genes"]:
        args.append("--impute-missing-genes")
    return " ".join(args)
