# Input and argument functions of the training stage's rules (rules/training.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.

from cmta_pipeline.modalities import LINEAR_MODELS, MODALITIES, reads_slides

TRAINING = config["training"]

# Models that read slides (their runs need features and, on a cluster, a GPU).
PATH_MODELS = {name for name in MODALITIES if reads_slides(name)}
ABLATION_FLAGS = {
    "no_cross_attention": "--no-cross-attention",
    "no_alignment": "--no-alignment",
    "no_detach": "--no-detach",
    "no_ppeg": "--no-ppeg",
}


def train_runs():
    """The runs to train: training.models and the ablations, on the first encoder's
    features, then those reading slides again on each further encoder's (<run>@<encoder>).
    """
    runs = list(TRAINING["models"]) + [f"cmta-{a}" for a in TRAINING["ablations"]]
    if not (len(SLIDES) and COHORT["with_slides"]):
        dropped = [r for r in runs if r.split("-")[0] in PATH_MODELS]
        if dropped:
            warn_once(f"training: no slides configured, skipping {', '.join(dropped)}")
        runs = [r for r in runs if r.split("-")[0] not in PATH_MODELS]
    return encoder_runs(runs, ENCODERS)


def run_model(run):
    """The model of a run: cmta of cmta, cmta-no_ppeg and cmta@uni_v1."""
    return run.partition("@")[0].split("-")[0]


def run_encoder(run):
    """The encoder whose features a run reads: <encoder> of <run>@<encoder>, else the
    first encoder."""
    return run.partition("@")[2] or ENCODER


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


def table_runs():
    """The runs of table 1 and of the report: the trained runs and the linear floor
    (table1.floor), trained for the table and reported like any run."""
    floor = config["table1"]["floor"]
    runs = train_runs()
    return runs + ([floor] if floor and floor not in runs else [])


def floor_targets(name="summary.json"):
    """File ``name`` of every fold of the floor run when training.models lacks it."""
    if not genomics_configured():
        return []
    extra = [r for r in table_runs() if r not in train_runs()]
    return expand(
        f"{OUT}/train/{{run}}/fold_{{fold}}/{name}", run=extra, fold=train_folds()
    )


def train_input(wildcards):
    files = {"cohort": f"{OUT}/cohort/folds.json", "folds": f"{OUT}/cohort/folds"}
    if run_model(wildcards.run) in PATH_MODELS:
        files["features"] = feature_targets(run_encoder(wildcards.run))
    return files


def train_gpus(wildcards):
    """One GPU for the runs of models that read slides, none for genomics-only models."""
    if run_model(wildcards.run) not in PATH_MODELS:
        return 0
    return gpus_for(TRAINING["device"])


def train_mem_mb(wildcards, input, attempt):
    """MB a training job asks for, doubled on each retry: training.mem_mb when set, else
    sized from its inputs (evaluated when the job starts, its features written). CMTA's
    peak memory grows by about 62 kB per patch of a bag (docs/benchmarks.md: 1.49 GB at
    4,096 patches, 4.32 GB at 50,000) and a feature file holds 4 kB per patch: 16 MB per
    MB of the largest patient's features, over 3 GB for torch (2 GB for genomics-only
    models), plus every bag with cache_bags."""
    if TRAINING["mem_mb"]:
        return TRAINING["mem_mb"] * attempt
    mb = {}  # features per patient
    for f in input.get("features", []):
        slide = os.path.basename(f).removesuffix(".features.h5")
        case = SLIDES.loc[slide, "case_id"] if slide in SLIDES.index else slide
        mb[case] = mb.get(case, 0) + os.path.getsize(f) / 2**20
    if not mb:
        return 2000 * attempt
    need = (
        3000
        + 16 * max(mb.values())
        + (sum(mb.values()) if TRAINING["cache_bags"] else 0)
    )
    return int(need) * attempt


def train_runtime(wildcards, attempt):
    """Minutes, doubled on each retry: training.runtime for models that read slides, at most
    60 for genomics-only ones (a BLCA fold of SNN trains in minutes)."""
    if run_model(wildcards.run) in PATH_MODELS:
        return TRAINING["runtime"] * attempt
    return min(TRAINING["runtime"], 60) * attempt


def train_gpu_model(wildcards):
    return gpu_model_for(train_gpus(wildcards))


def train_speed_args(wildcards, threads):
    """What changes only how fast a run trains (taking threads keeps it out of the params
    Snakemake records: changing it reruns nothing)."""
    return f"--threads {threads}" + (" --cache-bags" if TRAINING["cache_bags"] else "")


def train_args(wildcards):
    model, _, ablation = wildcards.run.partition("@")[0].partition("-")
    t = TRAINING
    if model in LINEAR_MODELS:  # scikit-survival: none of the networks' settings
        return f"--model {model} --fold {wildcards.fold} --seed {t['seed']}"
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
        features = LAYOUTS[run_encoder(wildcards.run)][2]
        args.append(f"--features-dir {shlex.quote(features)}")
    if ablation:
        args.append(ABLATION_FLAGS[ablation])
    if not t["weighted_sampler"]:
        args.append("--no-weighted-sampler")
    if not t["amp"]:
        args.append("--no-amp")
    if t["short_exact"]:
        args.append("--short-exact-attention")
    # given only when not the default, so that default runs keep their command
    if train_recipe(model) != "cmta":
        args.append(f"--recipe {train_recipe(model)}")
    if config.get("protocol") == "paper":
        args.append("--protocol paper")
    return " ".join(args)


def train_recipe(model):
    """training.recipes' entry for the model, else training.recipe (cmta | reference)."""
    return TRAINING["recipes"].get(model, TRAINING["recipe"])


TRAIN_RUN_PATTERN = (
    "(" + "|".join(MODALITIES) + ")(-(" + "|".join(ABLATION_FLAGS) + "))?"
)
if ENCODERS[1:]:  # the runs of the further encoders: <run>@<encoder>
    TRAIN_RUN_PATTERN += f"(@{alternatives(ENCODERS[1:])})?"
