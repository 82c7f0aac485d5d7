# Input and argument functions of the features stage's rules (rules/features.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.

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
