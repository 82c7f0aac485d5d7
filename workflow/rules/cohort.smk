# The cohort stage: patients with genomics, survival and usable slides, survival labels,
# cross-validation folds and per-fold preprocessing (cmta cohort). See docs/cohort.md.


include: "functions/cohort.smk"


rule cohort:
    input:
        unpack(cohort_slides),
        genomics=rules.genomics.output.families,
        other=rules.genomics.output.other,
    output:
        cohort=f"{OUT}/cohort/cohort.tsv",
        audit=report(
            f"{OUT}/cohort/audit.tsv",
            caption="../report/cohort_audit.rst",
            category="Genomics",
            labels={"table": "cohort audit"},
        ),
        # fold_<k>/: each fold's patients, labels and preprocessed genomics (read by train)
        folds=directory(f"{OUT}/cohort/folds"),
        # written last by cmta cohort: the cohort is complete
        marker=f"{OUT}/cohort/folds.json",
    log:
        f"{OUT}/logs/cohort.log",
    benchmark:
        f"{OUT}/benchmarks/cohort.tsv"
    conda:
        env_file("survival")
    threads: 1
    resources:
        mem_mb=scaled_mem(4000),
        runtime=scaled_runtime(20),
    params:
        args=cohort_args,
        gdir=lambda wc, input: os.path.dirname(input.genomics),
        outdir=lambda wc, output: os.path.dirname(output.marker),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} cohort {params.gdir:q} -o {params.outdir:q} {params.args} > {log:q} 2>&1"
