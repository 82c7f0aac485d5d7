# The genomics stage: genomic profiles in the six gene families (cmta genomics), and the
# default family file fetched once (a local rule). See docs/genomics.md for the file layouts.


include: "functions/genomics.smk"


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
        runtime=scaled_runtime(10),
    params:
        url=GENOMICS.get("families_url", ""),
        sha256=GENOMICS.get("families_sha256", ""),
    shell:
        "(curl -fsSL --retry 3 -o {output:q}.part {params.url:q}"
        " && printf '%s  %s.part\\n' {params.sha256:q} {output:q} | sha256sum -c -"
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
        runtime=scaled_runtime(20),
    params:
        args=genomics_args,
        outdir=lambda wc, output: os.path.dirname(output.families),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} genomics {params.args} -o {params.outdir:q} > {log:q} 2>&1"
