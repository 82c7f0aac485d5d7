# Risk for new patients (cmta predict), active when predict.genomics is set: the new
# patients' genomic table goes through cmta genomics (--missing-survival keep: no follow-up
# needed), then every trained run's fold models give each patient a risk, its percentile
# among the cohort's out-of-fold risks and a high/low group. See docs/predict.md.


include: "functions/predict.smk"


rule predict_genomics:
    input:
        unpack(predict_genomics_input),
    output:
        families=f"{OUT}/predict/genomics/families.tsv",
        other=[f"{OUT}/predict/genomics/{name}" for name in GENOMICS_OUTPUTS[1:]],
    log:
        f"{OUT}/logs/predict/genomics.log",
    benchmark:
        f"{OUT}/benchmarks/predict/genomics.tsv"
    conda:
        env_file("survival")
    threads: 1
    resources:
        mem_mb=scaled_mem(4000),
        runtime=scaled_runtime(20),
    params:
        args=predict_genomics_args,
        outdir=lambda wc, output: os.path.dirname(output.families),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} genomics {params.args} -o {params.outdir:q} > {log:q} 2>&1"


rule predict:
    input:
        unpack(predict_input),
    output:
        f"{OUT}/predict/{{run}}/risk.tsv",
    log:
        f"{OUT}/logs/predict/{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/predict/{{run}}.tsv"
    wildcard_constraints:
        run=TRAIN_RUN_PATTERN,
    conda:
        env_file("torch")
    threads: 1
    resources:
        mem_mb=scaled_mem(PREDICT["mem_mb"]),
        runtime=scaled_runtime(PREDICT["runtime"]),
    params:
        args=predict_args,
        run_dir=lambda wc: f"{OUT}/train/{wc.run}",
        cohort=f"{OUT}/cohort",
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} predict --run-dir {params.run_dir:q} --cohort {params.cohort:q}"
        " -o {output:q} {params.args} > {log:q} 2>&1"
