# Input and argument functions of the features stage's rules (rules/features.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.

import subprocess

FEATURES = config["features"]


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
        f"--reader {FEATURES['reader']}",
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
    """torch threads for a job that asks for no GPU; a GPU job's readers take its cores
    instead (cmta extract gives torch 2 threads there, with device auto too)."""
    return "" if gpus_for(FEATURES["device"]) else f"--threads {threads}"


def limit_local_gpus():
    """Local runs (no cluster executor, no --resources gpu=N given): jobs asking for a GPU
    run one per GPU this machine has (nvidia-smi -L, or CUDA_VISIBLE_DEVICES), e.g. one
    extraction at a time on a one-GPU workstation instead of two jobs each planning all
    the cores' readers. Without a GPU nothing is limited (such jobs run on the CPU)."""
    try:
        if workflow.nodes is not None or "gpu" in workflow.resource_settings.resources:
            return  # a cluster (--jobs), or the user said how many
        register = workflow.register_resource
    except AttributeError:  # a Snakemake without these (before 8.x): leave it unlimited
        return
    n = visible_gpus()
    if n:
        register("gpu", n)
        warn_once(
            f"local run: jobs asking for a GPU run {n} at a time ({n} GPU(s) seen); "
            "--resources gpu=N sets another number"
        )


def visible_gpus():
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())
