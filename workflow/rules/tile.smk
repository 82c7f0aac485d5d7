# The slide stage: tissue segmentation and the physical patch grid, one job per slide.
# A slide that cannot be tiled is recorded (status "failed") and, with slides.on_error: skip,
# does not stop the cohort; the checkpoint tile_summary lists which slides go on.
rule tile:
    input:
        slide_input,
    output:
        status=f"{OUT}/tiles/{{slide}}.tile.json",
    log:
        f"{OUT}/logs/tile/{{slide}}.log",
    benchmark:
        f"{OUT}/benchmarks/tile/{{slide}}.tsv"
    params:
        path=lambda wc: SLIDES.loc[wc.slide, "path"],
        args=tile_args,
        settings=lambda wc: json.dumps(config.get("tiling", {})),
        on_error=config["slides"]["on_error"],
        outdir=lambda wc, output: os.path.dirname(output.status),
        cmta=CMTA,
    conda:
        env_file("slides")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{params.cmta} tile {params.path:q} -o {params.outdir:q} {params.args} "
        "--settings {params.settings:q} --status {output.status:q} "
        "--on-error {params.on_error} > {log:q} 2>&1"


checkpoint tile_summary:
    input:
        expand(f"{OUT}/tiles/{{slide}}.tile.json", slide=SLIDES.index),
    output:
        summary=report(
            f"{OUT}/tiles/summary.tsv",
            caption="../report/tile_summary.rst",
            category="Slides",
        ),
        failed=f"{OUT}/tiles/failed_slides.tsv",
    log:
        f"{OUT}/logs/tile_summary.log",
    params:
        outdir=lambda wc, output: os.path.dirname(output.summary),
        cmta=CMTA,
    conda:
        env_file("slides")
    shell:
        "{params.cmta} tile-summary {input:q} -o {params.outdir:q} > {log:q} 2>&1"
