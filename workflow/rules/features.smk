# The feature stage: ResNet-50 (ImageNet, through layer3) 1024-d features of every patch of
# every successfully tiled slide (cmta extract), and the weights fetched once (cmta
# fetch-weights) so that compute nodes need no internet. See docs/features.md.

rule fetch_weights:
    output:
        FEATURES["weights_file"],
    log:
        f"{OUT}/logs/fetch_weights.log",
    params:
        cmta=CMTA,
    conda:
        env_file("torch")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{params.cmta} fetch-weights -o {output:q} > {log:q} 2>&1"


rule extract:
    input:
        # the tiling status (ok/failed); the coords file beside it is what is read
        status=f"{OUT}/tiles/{{slide}}.tile.json",
        weights=features_weights_input,
    output:
        h5=f"{OUT}/features/{{slide}}.features.h5",
        pt=f"{OUT}/features/{{slide}}.pt",
    log:
        f"{OUT}/logs/extract/{{slide}}.log",
    benchmark:
        f"{OUT}/benchmarks/extract/{{slide}}.tsv"
    params:
        path=lambda wc: SLIDES.loc[wc.slide, "path"],
        coords=lambda wc: f"{OUT}/tiles/{wc.slide}.coords.h5",
        args=features_args,
        outdir=lambda wc, output: os.path.dirname(output.h5),
        cmta=CMTA,
    conda:
        env_file("torch")
    threads: FEATURES["threads"]
    resources:
        mem_mb=FEATURES["mem_mb"],
        runtime=FEATURES["runtime"],
        gpu=1 if FEATURES["device"].startswith("cuda") else 0,
    shell:
        "{params.cmta} extract {params.path:q} {params.coords:q} -o {params.outdir:q} "
        "--slide-id {wildcards.slide:q} {params.args} > {log:q} 2>&1"


# `snakemake --cores 8 features`: the features of every tiled slide, without training.
rule features:
    input:
        lambda wc: feature_targets(),
    default_target: False
