# The feature stage: ResNet-50 (ImageNet, through layer3) 1024-d features of every patch of
# every successfully tiled slide (cmta extract), and the weights fetched once (cmta
# fetch-weights, a local rule: compute nodes need no internet). See docs/features.md.


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
        env_file("torch-cuda") if gpus_for(FEATURES["device"]) else env_file("torch")
    threads: extract_threads()
    resources:
        mem_mb=scaled_mem(FEATURES["mem_mb"]),
        runtime=FEATURES["runtime"],
        gpu=gpus_for(FEATURES["device"]),
    params:
        coords=lambda wc, input: os.path.join(input.tiles, f"{wc.slide}.coords.h5"),
        args=features_args,
        outdir=lambda wc, output: os.path.dirname(output.h5),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} extract {input.slide:q} {params.coords:q} -o {params.outdir:q} "
        "--slide-id {wildcards.slide:q} {params.args} > {log:q} 2>&1"


# `snakemake --cores 8 features`: the features of every tiled slide, without training.
rule features:
    default_target: False
    input:
        lambda wc: feature_targets(),
