# Evaluation: c-index per fold and run, Kaplan-Meier curves of risk groups with the
# log-rank test, one HTML page (cmta report). Runs once every training job has finished.
# Every file it writes is an output; the ones people look at are in the Snakemake report
# (snakemake --report), under "Results".
# Table 1 (cmta table1): <outdir>/table1.* over every cohort of the run, with the linear
# floor (table1.floor) and paired comparisons; the rule report is a cohort's own, and
# reports the floor like any run (metrics, Kaplan-Meier, the demo's planted-risk table).


include: "functions/report.smk"


if not COHORTS:

    rule report:
        input:
            summaries=train_targets("summary.json") + floor_targets("summary.json"),
            predictions=train_targets("predictions.tsv")
            + floor_targets("predictions.tsv"),
            # the training rows: censoring distribution of Uno's c-index, AUC(t) and Brier
            train_predictions=train_targets("train_predictions.tsv")
            + floor_targets("train_predictions.tsv"),
        output:
            summary=report(
                f"{OUT}/report/cindex_summary.tsv",
                caption="../report/cindex.rst",
                category="Results",
                subcategory="C-index",
                labels={"table": "c-index per run"},
            ),
            per_fold=report(
                f"{OUT}/report/cindex.tsv",
                caption="../report/cindex_folds.rst",
                category="Results",
                subcategory="C-index",
                labels={"table": "c-index per fold"},
            ),
            km=[
                report(
                    f"{OUT}/report/km_{run}.png",
                    caption="../report/km.rst",
                    category="Results",
                    subcategory="Kaplan-Meier",
                    labels={"run": run},
                )
                for run in table_runs()
            ],
            metrics=report(
                f"{OUT}/report/metrics.tsv",
                caption="../report/metrics.rst",
                category="Results",
                subcategory="Metrics",
                labels={"table": "metrics per fold (long form)"},
            ),
            metrics_summary=report(
                f"{OUT}/report/metrics_summary.tsv",
                caption="../report/metrics.rst",
                category="Results",
                subcategory="Metrics",
                labels={"table": "metrics, mean +- sd"},
            ),
            km_svg=[f"{OUT}/report/km_{run}.svg" for run in table_runs()],
            cindex_per_fold=report(
                f"{OUT}/report/cindex_per_fold.png",
                caption="../report/cindex_per_fold.rst",
                category="Results",
                subcategory="C-index",
                labels={"figure": "c-index per fold"},
            ),
            cindex_per_fold_svg=f"{OUT}/report/cindex_per_fold.svg",
            summary_md=report(
                f"{OUT}/report/summary.md",
                caption="../report/summary.rst",
                category="Results",
                subcategory="Summary",
                labels={"file": "summary.md"},
            ),
            html=f"{OUT}/report/report.html",
        log:
            f"{OUT}/logs/report.log",
        benchmark:
            f"{OUT}/benchmarks/report.tsv"
        localrule: True
        conda:
            env_file("report")
        threads: 1
        resources:
            mem_mb=scaled_mem(2000),
            runtime=scaled_runtime(10),
        params:
            # {OUT}/train, from .../train/<run>/fold_<k>/summary.json
            train_dir=lambda wc, input: os.path.dirname(
                os.path.dirname(os.path.dirname(input.summaries[0]))
            ),
            runs=lambda wc: " ".join(map(shlex.quote, table_runs())),
            outdir=lambda wc, output: os.path.dirname(output.summary),
            cmta=CMTA,
            version=VERSION,
        shell:
            "{params.cmta} report {params.train_dir:q} --runs {params.runs} -o {params.outdir:q} > {log:q} 2>&1"


rule table1:
    input:
        table1_input,
    output:
        md=report(
            f"{OUT}/table1.md",
            caption="../report/table1.rst",
            category="Results",
            subcategory="Table 1",
            labels={"file": "table1.md"},
        ),
        tsv=f"{OUT}/table1.tsv",
        paired=report(
            f"{OUT}/table1_paired.tsv",
            caption="../report/table1_paired.rst",
            category="Results",
            subcategory="Table 1",
            labels={"table": "paired comparisons"},
        ),
        png=report(
            f"{OUT}/table1.png",
            caption="../report/table1.rst",
            category="Results",
            subcategory="Table 1",
            labels={"figure": "models x cohorts"},
        ),
        svg=f"{OUT}/table1.svg",
    log:
        f"{OUT}/logs/table1.log",
    benchmark:
        f"{OUT}/benchmarks/table1.tsv"
    localrule: True
    conda:
        env_file("report")
    threads: 1
    resources:
        mem_mb=scaled_mem(2000),
        runtime=scaled_runtime(20),
    params:
        args=table1_args,
        paper=lambda wc, input: paper_table_file(),
        outdir=lambda wc, output: os.path.dirname(output.md) or ".",
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} table1 {params.args} --paper-table {params.paper:q} "
        "-o {params.outdir:q} > {log:q} 2>&1"


if COHORTS:

    # External validation (config external:): every run of the train cohort predicts every
    # patient of the test cohort with its fold ensemble (cmta external); table 1 reads it.
    rule external:
        input:
            unpack(external_input),
        output:
            summary=f"{OUT}/external/{{pair}}/{{run}}/external.json",
            risk=f"{OUT}/external/{{pair}}/{{run}}/risk.tsv",
            km=f"{OUT}/external/{{pair}}/{{run}}/km.png",
            km_svg=f"{OUT}/external/{{pair}}/{{run}}/km.svg",
        log:
            f"{OUT}/logs/external/{{pair}}/{{run}}.log",
        benchmark:
            f"{OUT}/benchmarks/external/{{pair}}/{{run}}.tsv"
        wildcard_constraints:
            pair="[A-Za-z0-9_]+",
            run="[A-Za-z0-9_-]+",
        conda:
            env_file("torch")
        threads: 1
        resources:
            mem_mb=scaled_mem(8000),
            runtime=scaled_runtime(60),
        params:
            args=external_args,
            outdir=lambda wc, output: os.path.dirname(output.summary),
            cmta=CMTA,
            version=VERSION,
        shell:
            "{params.cmta} external {params.args} -o {params.outdir:q} > {log:q} 2>&1"
