# The feature stage: ResNet-50 (ImageNet, through layer3) 1024-d features of every patch of
# every successfully tiled slide (cmta extract), and the weights fetched once (cmta
# fetch-weights, a local rule: compute nodes need no internet). See docs/features.md.


include: "functions/features.smk"


# Local runs: GPU jobs (extraction, and training of models that read slides) one per GPU.
limit_local_gpus()


# A local rule (runs where snakemake runs, not as a cluster job): it needs the internet.
rule fetch_weights:
    output:
        FEATURES["weights_file"],
    log:
        f"{OUT}/logs/fetch_weights.log",
    localrule: True
    conda:
        env_file("torch")
    threads: 1
    resources:
        mem_mb=scaled_mem(2000),
        runtime=30,
    params:
        cmta=CMTA,
    shell:
        "{params.cmta} fetch-weights -o {output:q} > {log:q} 2>&1"


# On a cluster each job asks for one GPU (config gpu, features.device) and a core per
# reader process; inside the job device auto picks CUDA when the job sees a GPU.
if FEATURES["slides_per_job"] == 1:

    rule extract:
        input:
            slide=slide_input,
            # the tiling status (ok/failed) and the slide's folder with <slide>.coords.h5
            status=f"{OUT}/tiles/{{slide}}.tile.json",
            tiles=f"{OUT}/tiles/{{slide}}",
            weights=features_weights_input,
        output:
            h5=f"{OUT}/features/{{slide}}.features.h5",
            pt=f"{OUT}/features/{{slide}}.pt",
        log:
            f"{OUT}/logs/extract/{{slide}}.log",
        benchmark:
            f"{OUT}/benchmarks/extract/{{slide}}.tsv"
        conda:
            extract_env()
        threads: extract_threads()
        resources:
            mem_mb=scaled_mem(FEATURES["mem_mb"]),
            runtime=FEATURES["runtime"],
            gpu=gpus_for(FEATURES["device"]),
        params:
            coords=lambda wc, input: os.path.join(input.tiles, f"{wc.slide}.coords.h5"),
            args=features_args,
            torch_threads=features_threads,
            outdir=lambda wc, output: os.path.dirname(output.h5),
            cmta=CMTA,
            version=VERSION,
        shell:
            "{params.cmta} extract {input.slide:q} {params.coords:q} -o {params.outdir:q} "
            "--slide-id {wildcards.slide:q} {params.args} {params.torch_threads} > {log:q} 2>&1"

else:
    # features.slides_per_job > 1: one job (one process, one model load) per batch of
    # slides, in the slide sheet's order. A slide whose tiling failed is passed with its
    # status file and gets empty feature files marked failed, which nothing reads.
    for batch, ids in enumerate(extract_batches()):

        rule:
            name:
                f"extract_batch_{batch}"
            input:
                slides=slide_files(ids),
                status=[f"{OUT}/tiles/{s}.tile.json" for s in ids],
                tiles=[f"{OUT}/tiles/{s}" for s in ids],
                weights=features_weights_input,
            output:
                h5=[f"{OUT}/features/{s}.features.h5" for s in ids],
                pt=[f"{OUT}/features/{s}.pt" for s in ids],
            log:
                f"{OUT}/logs/extract/batch_{batch}.log",
            benchmark:
                f"{OUT}/benchmarks/extract/batch_{batch}.tsv"
            conda:
                extract_env()
            threads: extract_threads()
            resources:
                mem_mb=scaled_mem(FEATURES["mem_mb"]),
                runtime=FEATURES["runtime"] * len(ids),
                gpu=gpus_for(FEATURES["device"]),
            params:
                inputs=batch_inputs(ids),
                args=features_args,
                torch_threads=features_threads,
                outdir=lambda wc, output: os.path.dirname(output.h5[0]),
                cmta=CMTA,
                version=VERSION,
            shell:
                "{params.cmta} extract {params.inputs} -o {params.outdir:q} "
                "{params.args} {params.torch_threads} > {log:q} 2>&1"


# `snakemake --cores 8 features`: the features of every tiled slide, without training.
rule features:
    default_target: False
    input:
        lambda wc: feature_targets(),
