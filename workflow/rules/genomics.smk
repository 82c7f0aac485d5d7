# The genomics stage: genomic profiles in the six gene families (cmta genomics), then the
# cohort: patients with genomics, survival and usable slides, labels, folds and per-fold
# preprocessing (cmta cohort). See docs/genomics.md for the file layouts.


# A local rule (runs where snakemake runs, not as a cluster job): it needs the internet.
rule download_families:
    output:
        f"{OUT}/resources/signatures.csv",
    log:
        f"{OUT}/logs/download_families.log",
    localrule: True
    conda:
        env_file("survival")
    threads: 1
    resources:
        mem_mb=scaled_mem(200),
        runtime=10,
    params:
        url=GENOMICS.get("families_url", ""),
        sha256=GENOMICS.get("families_sha256", ""),
    shell:
        "(curl -fsSL --retry 3 -o {output:q}.part {params.url:q}"
        " && echo '{params.sha256}  {output}.part' | sha256sum -c -"
        " && mv {output:q}.part {output:q}) > {log:q} 2>&1"


rule genomics:
    input:
        unpack(genomics_input),
    output:
        families=report(
            f"{OUT}/genomics/families.tsv",
            caption="../report/genomics_families.rst",
            category="Genomics",
            labels={"table": "gene families"},
        ),
        other=[f"{OUT}/genomics/{name}" for name in GENOMICS_OUTPUTS[1:]],
    log:
        f"{OUT}/logs/genomics.log",
    benchmark:
        f"{OUT}/benchmarks/genomics.tsv"
    conda:
        env_file("survival")
    threads: 1
    resources:
        mem_mb=scaled_mem(4000),
        runtime=20,
    params:
        args=genomics_args,
        outdir=lambda wc, output: os.path.dirname(output.families),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} genomics {params.args} -o {params.outdir:q} > {log:q} 2>&1"


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
        runtime=20,
    params:
        args=cohort_args,
        gdir=lambda wc, input: os.path.dirname(input.genomics),
        outdir=lambda wc, output: os.path.dirname(output.marker),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} cohort {params.gdir:q} -o {params.outdir:q} {params.args} > {log:q} 2>&1"
