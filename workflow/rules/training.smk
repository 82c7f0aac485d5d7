# The training stage: one job per model x fold (cmta train). A "run" is a model name
# (cmta_pipeline.models.MODELS: cmta, snn, snntrans, meanmil, maxmil, attmil, transmil,
# dualtrans, ...) or a CMTA ablation "cmta-<ablation>" (no_cross_attention, no_alignment,
# no_detach, no_ppeg). Outputs per run and fold: {OUT}/train/{run}/fold_{k}/ model.pt,
# epochs.tsv, predictions.tsv, train_predictions.tsv, summary.json. See docs/training.md.
# On a cluster the runs of models that read slides ask for one GPU (config gpu,
# training.device); genomics-only models run on CPUs.


include: "functions/training.smk"


rule train:
    input:
        unpack(train_input),
    output:
        summary=f"{OUT}/train/{{run}}/fold_{{fold}}/summary.json",
        model=f"{OUT}/train/{{run}}/fold_{{fold}}/model.pt",
        epochs=f"{OUT}/train/{{run}}/fold_{{fold}}/epochs.tsv",
        predictions=f"{OUT}/train/{{run}}/fold_{{fold}}/predictions.tsv",
        train_predictions=f"{OUT}/train/{{run}}/fold_{{fold}}/train_predictions.tsv",
    log:
        f"{OUT}/logs/train/{{run}}/fold_{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/train/{{run}}/fold_{{fold}}.tsv"
    wildcard_constraints:
        run=TRAIN_RUN_PATTERN,
        fold=r"\d+",
    conda:
        lambda wc: env_file("torch-cuda") if train_gpus(wc) else env_file("torch")
    threads: TRAINING["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=train_gpus,
        gpu_model=train_gpu_model,
    params:
        args=train_args,
        speed=train_speed_args,
        cohort=f"{OUT}/cohort",
        outdir=lambda wc, output: os.path.dirname(output.summary),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} train --cohort {params.cohort:q} -o {params.outdir:q} {params.args}"
        " {params.speed} > {log:q} 2>&1"
