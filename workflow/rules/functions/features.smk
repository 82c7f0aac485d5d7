# Input and argument functions of the features stage's rules (rules/features.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.

FEATURES = config["features"]

# sha256 of torchvision's resnet50-0676ba61.pth (IMAGENET1K_V1, 102,530,333 bytes; the file
# name carries its first 8 hex digits), checked by Snakemake after fetch_weights.
IMAGENET_SHA256 = "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a"

# The encoder jobs write each slide's features here; the rule extract moves them into
# features{encoder_dir}/ (temp: nothing is left here).
ENCODED = f"{FEATURES_WC}/encoded"


def extract_gpus():
    return gpus_for(FEATURES["device"])


def extract_threads():
    """Cores of an encoder job: gpu_threads when it asks for a GPU (readers feed it),
    else threads; at least one per configured reader process plus one for the encoder.
    """
    cores = FEATURES["gpu_threads"] if extract_gpus() else FEATURES["threads"]
    return max(cores, (FEATURES["workers"] or 0) + 1)


def extract_env():
    """The conda env of the encoder jobs: CUDA torch when this run has GPUs (config gpu),
    whatever features.device says, so that the device (a speed setting) does not change a
    job's software env (which Snakemake's software-env trigger would rerun)."""
    return env_file("torch-cuda") if GPU else env_file("torch")


def feature_targets(encoder=None):
    """Feature files of ``encoder`` (default: every encoder of the run) of the slides tiled
    successfully (after the checkpoint tile_summary of its tiling)."""
    return [
        f
        for e in ([encoder] if encoder else ENCODERS)
        for f in expand(f"{LAYOUTS[e][2]}/{{slide}}.features.h5", slide=tiled_slides(e))
    ]


def encoder_of(wildcards):
    """The encoder of a job of the features rules (its wildcard encoder_dir)."""
    return next(e for e, d in ENCODER_DIR.items() if d == wildcards.encoder_dir)


def tiles_of(wildcards):
    """The tiles folder (SHARED) of the encoder of a job of the features rules."""
    return LAYOUTS[encoder_of(wildcards)][1]


def tiling_summary(wildcards):
    """This run's tiling summary of the job's encoder, ancient: a slide tiled again reruns
    its own `extract` (its tiles are newer), not every encoder job."""
    return ancient(f"{OUT}/tiles{GEOMETRY[encoder_of(wildcards)]}/summary.tsv")


def extract_batches():
    """The encoder jobs' batches of about features.slides_per_job slides (slide_batches)."""
    return slide_batches(FEATURES["slides_per_job"])


def encode_inputs(ids):
    """`cmta extract`'s slide arguments for the slides ``ids``: SLIDE COORDS pairs, then a
    --slide-id and a --tile-status per slide (a failed tiling is not read). Taking
    ``input`` keeps them out of the params Snakemake records: where the slide files lie is
    no setting of the features (the tiling records which file it read, rules/slides.smk).
    """

    def args(wildcards, input):
        ids_ = ids if ids is not None else [wildcards.slide]
        pairs, per_slide = [], []
        tiles = tiles_of(wildcards)
        for s in ids_:
            status = f"{tiles}/{s}.tile.json"
            pairs += [SLIDES.loc[s, "path"], f"{tiles}/{s}/{s}.coords.h5"]
            per_slide += ["--slide-id", s, "--tile-status", status]
        return " ".join(map(shlex.quote, pairs + per_slide))

    return args


def encoded(ids, suffix):
    return [temp(f"{ENCODED}/{s}{suffix}") for s in ids]


def published_weights_file(encoder):
    """Where fetch_weights saves the encoder's published weights: weights_file for
    resnet50, resources/weights/<encoder>/<the hub file's name> for the others."""
    if encoder == "resnet50":
        return FEATURES["weights_file"]
    from cmta_pipeline.features.encoders.registry import get_spec

    return f"resources/weights/{encoder}/{os.path.basename(get_spec(encoder).hf_file)}"


def published_weights_sha256(encoder):
    """The sha256 Snakemake checks after fetch_weights (resnet50's, or the registry's
    where it knows one; fetch-weights checks the file loads into the encoder anyway)."""
    if encoder == "resnet50":
        return IMAGENET_SHA256
    from cmta_pipeline.features.encoders.registry import get_spec

    return get_spec(encoder).sha256 or None


def fetch_weights_rule(encoder):
    """Name of the job fetching ``encoder``'s weights (fetch_encoder_weights for the first
    encoder other than resnet50, fetch_encoder_weights_<encoder> for the next ones)."""
    first = next(e for e in ENCODERS if e != "resnet50")
    name = re.sub(r"\W", "_", encoder)
    return (
        "fetch_encoder_weights" if encoder == first else f"fetch_encoder_weights_{name}"
    )


def features_weights_input(wildcards):
    """The weights file the job reads: fetched published weights, a user's file, or none."""
    w = FEATURES["weights"]
    if w == "random":
        return []
    return [
        published_weights_file(encoder_of(wildcards)) if w in ("imagenet", "hub") else w
    ]


# YAML reads a bare on/off as true/false
COMPILE_MODE = {True: "on", False: "off"}


# Snakemake records a rule's params and reruns a job whose params changed; params computed
# from a job's input, output, threads or resources are not recorded. So features_args,
# which takes the wildcards only, holds the settings that change the features (recorded:
# changing one reruns the extraction), and features_speed_args, which takes threads, those
# that change only how fast or where they are computed (the device: CUDA's fp16 is checked
# against fp32 on each slide; compiled code against eager): changing one reruns nothing.


def features_args(wildcards):
    w = FEATURES["weights"]
    encoder = encoder_of(wildcards)
    weights = features_weights_input(wildcards)
    args = [
        f"--weights {shlex.quote(weights[0] if w != 'random' else 'random')}",
        f"--precision {FEATURES['precision']}",
        f"--read-at {FEATURES['read_at']}",
        f"--reader {FEATURES['reader']}",
        f"--on-error {FEATURES['on_error']}",
        "--no-progress",
    ]
    if encoder != "resnet50":  # resnet50's command stays as it was: nothing reruns
        args.insert(0, f"--encoder {shlex.quote(encoder)}")
    # the other encoders take their own input size (the tiling plans it)
    if FEATURES["input_px"] is not None and encoder == "resnet50":
        args.append(f"--input-px {int(FEATURES['input_px'])}")
    return " ".join(args)


def features_speed_args(wildcards, threads):
    args = [
        f"--device {FEATURES['device']}",
        f"--compile {COMPILE_MODE.get(FEATURES['compile'], FEATURES['compile'])}",
        "--compile-cache "
        + shlex.quote(FEATURES["compile_cache"] or f"{OUT}/cache/inductor"),
    ]
    # unset = sized by cmta extract from the CPUs, /dev/shm and GPU the job gets
    for key in ("batch_size", "workers", "compile_min_patches"):
        if FEATURES[key] is not None:
            args.append(f"--{key.replace('_', '-')} {int(FEATURES[key])}")
    # torch threads for a job that asks for no GPU; a GPU job's readers take its cores
    # instead (cmta extract gives torch 2 threads there, with device auto too)
    if not extract_gpus():
        args.append(f"--threads {threads}")
    # a check of the weights file, not a setting of the features: a new hash reruns nothing
    if FEATURES.get("weights_sha256") and FEATURES["weights"] != "random":
        args.append(f"--weights-sha256 {shlex.quote(str(FEATURES['weights_sha256']))}")
    return " ".join(args)


def limit_local_gpus():
    """Local runs (no cluster executor, no --resources gpu=N given): jobs asking for a GPU
    run one per GPU this machine has (host_gpus in functions/common.smk), e.g. one
    extraction at a time on a one-GPU workstation instead of two jobs each planning all
    the cores' readers. Without a GPU nothing is limited (such jobs run on the CPU)."""
    try:
        if workflow.nodes is not None or "gpu" in workflow.resource_settings.resources:
            return  # a cluster (--jobs), or the user said how many
        register = workflow.register_resource
    except AttributeError:  # a Snakemake without these (before 8.x): leave it unlimited
        return
    n = host_gpus() if GPU else 0
    if n:
        register("gpu", n)
        warn_once(
            f"local run: jobs asking for a GPU run {n} at a time ({n} GPU(s) seen); "
            "--resources gpu=N sets another number"
        )
