# Attention heatmaps (cmta heatmap; docs/heatmaps.md): for each run in heatmaps.runs that has
# patch attention (cmta, attmil, transmil, dualtrans and CMTA ablations), the slides of the
# configured heatmaps.cases, or of the heatmaps.top_k highest- and lowest-risk held-out
# patients, each drawn by the fold model that held the patient out.
# Outputs: {OUT}/heatmaps/{run}/<slide_id>.attention.h5, <slide_id>.heatmap.png, heatmaps.tsv.
# Settings and input functions: below.


include: "functions/heatmaps.smk"


rule heatmap:
    input:
        cohort=f"{OUT}/cohort/folds.json",
        models=lambda wc: expand(
            f"{OUT}/train/{wc.run}/fold_{{fold}}/summary.json", fold=train_folds()
        ),
        weights=lambda wc: expand(
            f"{OUT}/train/{wc.run}/fold_{{fold}}/model.pt", fold=train_folds()
        ),
        predictions=lambda wc: expand(
            f"{OUT}/train/{wc.run}/fold_{{fold}}/predictions.tsv", fold=train_folds()
        ),
        features=lambda wc: feature_targets(run_encoder(wc.run)),
        # tiles/<slide>/<slide>.coords.h5: the patches' places and the slide file
        tiles=lambda wc: expand(
            f"{LAYOUTS[run_encoder(wc.run)][1]}/{{slide}}",
            slide=tiled_slides(run_encoder(wc.run)),
        ),
    output:
        index=report(
            f"{OUT}/heatmaps/{{run}}/heatmaps.tsv",
            caption="../report/heatmaps.rst",
            category="Heatmaps",
        ),
    log:
        f"{OUT}/logs/heatmaps/{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/heatmaps/{{run}}.tsv"
    wildcard_constraints:
        run=TRAIN_RUN_PATTERN,
    conda:
        env_file("torch")
    threads: HEATMAPS["threads"]
    resources:
        mem_mb=scaled_mem(HEATMAPS["mem_mb"]),
        runtime=scaled_runtime(HEATMAPS["runtime"]),
    params:
        args=heatmap_args,
        run_dir=lambda wc, input: os.path.dirname(os.path.dirname(input.models[0])),
        cohort=lambda wc, input: os.path.dirname(input.cohort),
        features=lambda wc: LAYOUTS[run_encoder(wc.run)][2],
        tiles=lambda wc: LAYOUTS[run_encoder(wc.run)][1],
        outdir=lambda wc, output: os.path.dirname(output.index),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} heatmap --run-dir {params.run_dir:q} --cohort {params.cohort:q}"
        " --features-dir {params.features:q} --tiles-dir {params.tiles:q} {params.args}"
        " --threads {threads} -o {params.outdir:q} > {log:q} 2>&1"
