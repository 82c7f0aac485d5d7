# The slide stage: tissue segmentation and the physical patch grid, one job per slide.
# A slide that cannot be tiled is recorded (status "failed", its folder left empty) and,
# with slides.on_error: skip, does not stop the cohort; the checkpoint tile_summary lists
# which slides go on.


include: "functions/slides.smk"


# A cohort's part of a run of several (parent_outdir set) reads the run's tiles; the
# run tiles each slide once.
if OWNS_SLIDES:

    rule tile:
        input:
            slide_input,
        output:
            status=f"{TILES_WC}/{{slide}}.tile.json",
            # <slide>.coords.h5 (read by the encoder jobs), <slide>.qc.png and its small JPEG,
            # <slide>.qc.jpg, which the Snakemake report embeds (the PNGs would make it huge)
            tiles=report(
                directory(f"{TILES_WC}/{{slide}}"),
                patterns=["{slide}.qc.jpg"],
                caption="../report/slide_qc.rst",
                category="Slides",
                subcategory="{slide}",
                labels={"slide": "{slide}", "figure": "tissue and patches"},
            ),
        log:
            f"{OUT}/logs/tile{{geometry}}/{{slide}}.log",
        benchmark:
            f"{OUT}/benchmarks/tile{{geometry}}/{{slide}}.tsv"
        conda:
            env_file("slides")
        threads: 1
        resources:
            mem_mb=scaled_mem(2000),
            runtime=scaled_runtime(30),
        params:
            path=slide_path,
            slide=slide_file,
            args=tile_args,
            settings=tile_settings,
            tiling=tile_result_settings,
            on_error=config["slides"]["on_error"],
            cmta=CMTA,
            version=VERSION,
        shell:
            "mkdir -p {output.tiles:q} && "
            "{params.cmta} tile {params.path:q} -o {output.tiles:q} {params.args} "
            "--settings {params.settings:q} --status {output.status:q} "
            "--on-error {params.on_error} > {log:q} 2>&1"

    # The QC pictures at tiling.qc_max_px: one local job per tiling draws again those drawn
    # at another size (the tile jobs draw them; the size is not recorded there, so
    # changing it retiles nothing: config/README.md).
    rule qc_pictures:
        input:
            tile_status_files,
        output:
            f"{TILES_WC}/qc_pictures.tsv",
        log:
            f"{OUT}/logs/qc_pictures{{geometry}}.log",
        localrule: True
        conda:
            env_file("slides")
        threads: 1
        resources:
            mem_mb=scaled_mem(2000),
            runtime=scaled_runtime(60),
        params:
            args=picture_args,
            cmta=CMTA,
            version=VERSION,
        shell:
            "{params.cmta} tile-qc {input:q} {params.args} -o {output:q} > {log:q} 2>&1"


checkpoint tile_summary:
    input:
        tile_status_files,
    output:
        summary=report(
            f"{OUT}/tiles{{geometry}}/summary.tsv",
            caption="../report/tile_summary.rst",
            category="Slides",
            subcategory="Summary",
            labels={"table": "tiling of every slide"},
        ),
        failed=report(
            f"{OUT}/tiles{{geometry}}/failed_slides.tsv",
            caption="../report/failed_slides.rst",
            category="Slides",
            subcategory="Summary",
            labels={"table": "failed slides"},
        ),
    log:
        f"{OUT}/logs/tile_summary{{geometry}}.log",
    benchmark:
        f"{OUT}/benchmarks/tile_summary{{geometry}}.tsv"
    localrule: True
    conda:
        env_file("slides")
    threads: 1
    resources:
        mem_mb=scaled_mem(1000),
        runtime=scaled_runtime(10),
    params:
        outdir=lambda wc, output: os.path.dirname(output.summary),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} tile-summary {input:q} -o {params.outdir:q} > {log:q} 2>&1"
