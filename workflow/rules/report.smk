# Evaluation: c-index per fold and run, Kaplan-Meier curves of risk groups with the
# log-rank test, one HTML page (cmta report). Runs once every training job has finished.
rule report:
    input:
        train_targets(),
    output:
        summary=report(
            f"{OUT}/report/cindex_summary.tsv",
            caption="../report/cindex.rst",
            category="Results",
        ),
        per_fold=f"{OUT}/report/cindex.tsv",
        html=f"{OUT}/report/report.html",
    log:
        f"{OUT}/logs/report.log",
    params:
        # {OUT}/train, from .../train/<run>/fold_<k>/summary.json
        train_dir=lambda wc, input: os.path.dirname(os.path.dirname(os.path.dirname(input[0]))),
        runs=lambda wc: " ".join(train_runs()),
        outdir=lambda wc, output: os.path.dirname(output.summary),
        cmta=CMTA,
    conda:
        env_file("report")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{params.cmta} report {params.train_dir:q} --runs {params.runs} -o {params.outdir:q} > {log:q} 2>&1"
