# The feature stage: features of every patch of every successfully tiled slide by each
# encoder of features.encoders (or features.encoder; default ResNet-50 through layer3,
# 1024-d; cmta extract), each one's files under features{encoder_dir}/, and the weights
# fetched once (cmta
# fetch-weights, a local rule: compute nodes need no internet). See docs/features.md.
#
# Two steps, so that how the work is cut into jobs is no setting of the results:
# * encoder jobs, `encode` (a slide each) or `encode_batch_<k>` (features.slides_per_job > 1:
#   many slides in one process, one model load), run `cmta extract` into features/encoded/;
# * `extract`, one small local job per slide, moves its files into features/. Snakemake
#   records on these files the settings that change features; the encoder jobs' outputs
#   are temporary. Changing slides_per_job, threads, batch size or device reruns nothing;
#   `--forcerun extract` reruns the encoder jobs of every slide.


include: "functions/features.smk"


# Local runs: GPU jobs (extraction, and training of models that read slides) one per GPU.
limit_local_gpus()


# A cohort's part of a run of several (parent_outdir set) reads the run's features; the
# run encodes each slide once.
if OWNS_SLIDES:

    # A local rule (runs where snakemake runs, not as a cluster job): it needs the internet.
    rule fetch_weights:
        output:
            ensure(FEATURES["weights_file"], sha256=IMAGENET_SHA256),
        log:
            f"{OUT}/logs/fetch_weights.log",
        localrule: True
        conda:
            env_file("torch")
        threads: 1
        resources:
            mem_mb=scaled_mem(2000),
            runtime=scaled_runtime(30),
        params:
            cmta=CMTA,
        shell:
            "{params.cmta} fetch-weights -o {output:q} > {log:q} 2>&1"

    # Another encoder's published weights (each of features.encoders but resnet50), also
    # fetched once by a local rule; gated Hugging Face models (UNI, CONCH, Virchow, ...)
    # read a token from HF_TOKEN.
    for enc in (e for e in ENCODERS if e != "resnet50"):

        rule:
            name:
                fetch_weights_rule(enc)
            output:
                ensure(
                    published_weights_file(enc), sha256=published_weights_sha256(enc)
                ),
            log:
                f"{OUT}/logs/fetch_weights_{enc}.log",
            localrule: True
            conda:
                env_file("torch")
            threads: 1
            resources:
                mem_mb=scaled_mem(8000),
                runtime=scaled_runtime(60),
            params:
                cmta=CMTA,
                encoder=shlex.quote(enc),
            shell:
                "{params.cmta} fetch-weights --encoder {params.encoder} -o {output:q} "
                "> {log:q} 2>&1"

    rule extract:
        input:
            h5=f"{ENCODED}/{{slide}}.features.h5",
            pt=f"{ENCODED}/{{slide}}.pt",
            # the tiling status (ok/failed) and the slide's folder with <slide>.coords.h5
            status=lambda wc: f"{tiles_of(wc)}/{wc.slide}.tile.json",
            tiles=lambda wc: f"{tiles_of(wc)}/{wc.slide}",
            weights=features_weights_input,
        output:
            h5=f"{FEATURES_WC}/{{slide}}.features.h5",
            pt=f"{FEATURES_WC}/{{slide}}.pt",
        log:
            f"{OUT}/logs/extract{{encoder_dir}}/{{slide}}.log",
        localrule: True
        conda:
            env_file("slides")
        params:
            args=features_args,
            version=VERSION,
        # a shell step, not run: (which Snakemake executes by starting a whole Snakemake
        # process per job, 1-2 s of CPU each): mv is the os.replace of one file system
        shell:
            "mv -f {input.h5:q} {output.h5:q} && mv -f {input.pt:q} {output.pt:q} && "
            "echo {output.h5:q} {output.pt:q}: from {input.h5:q} {input.pt:q} > {log:q}"

    # The encoder jobs. On a cluster each asks for one GPU (config gpu, features.device) and a
    # core per reader process; inside the job device auto picks CUDA when the job sees a GPU.
    # Their one input besides the weights is the tiling summary, ancient: a slide tiled again
    # reruns its own `extract` (its tiles are newer), which needs its encoder job's files.
    # Both rules have the same command (Snakemake records it: a changed one reruns the job).
    if FEATURES["slides_per_job"] == 1:

        rule encode:
            input:
                summary=tiling_summary,
                weights=features_weights_input,
            output:
                h5=temp(f"{ENCODED}/{{slide}}.features.h5"),
                pt=temp(f"{ENCODED}/{{slide}}.pt"),
            log:
                f"{OUT}/logs/encode{{encoder_dir}}/{{slide}}.log",
            benchmark:
                f"{OUT}/benchmarks/encode{{encoder_dir}}/{{slide}}.tsv"
            conda:
                extract_env()
            threads: extract_threads()
            resources:
                mem_mb=scaled_mem(FEATURES["mem_mb"]),
                runtime=scaled_runtime(FEATURES["runtime"]),
                gpu=extract_gpus(),
                gpu_model=gpu_model_for(extract_gpus()),
            params:
                slides=encode_inputs(None),
                args=features_args,
                speed=features_speed_args,
                outdir=lambda wc, output: os.path.dirname(output.h5),
                cmta=CMTA,
                version=VERSION,
            shell:
                "{params.cmta} extract {params.slides} -o {params.outdir:q} {params.args} "
                "{params.speed} > {log:q} 2>&1"

    else:
        # features.slides_per_job > 1: one job (one process, one model load) per batch. A slide
        # whose tiling failed is passed with its status file and gets empty feature files marked
        # failed, which nothing reads.
        for batch, ids in enumerate(extract_batches()):

            rule:
                name:
                    f"encode_batch_{batch}"
                input:
                    summary=tiling_summary,
                    weights=features_weights_input,
                output:
                    h5=encoded(ids, ".features.h5"),
                    pt=encoded(ids, ".pt"),
                log:
                    f"{OUT}/logs/encode{{encoder_dir}}/batch_{batch}.log",
                benchmark:
                    f"{OUT}/benchmarks/encode{{encoder_dir}}/batch_{batch}.tsv"
                conda:
                    extract_env()
                threads: extract_threads()
                resources:
                    mem_mb=scaled_mem(FEATURES["mem_mb"]),
                    runtime=scaled_runtime(FEATURES["runtime"] * len(ids)),
                    gpu=extract_gpus(),
                    gpu_model=gpu_model_for(extract_gpus()),
                params:
                    slides=encode_inputs(ids),
                    args=features_args,
                    speed=features_speed_args,
                    outdir=lambda wc, output: os.path.dirname(output.h5[0]),
                    cmta=CMTA,
                    version=VERSION,
                shell:
                    "{params.cmta} extract {params.slides} -o {params.outdir:q} {params.args} "
                    "{params.speed} > {log:q} 2>&1"

    # `snakemake --cores 8 features`: the features of every tiled slide, without training.
    rule features:
        default_target: False
        input:
            lambda wc: feature_targets(),
