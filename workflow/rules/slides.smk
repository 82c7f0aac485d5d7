# The slide stage: tissue segmentation and the physical patch grid, one job per slide.
# A slide that cannot be tiled is recorded (status "failed", its folder left empty) and,
# with slides.on_error: skip, does not stop the cohort; the checkpoint tile_summary lists
# which slides go on.


include: "functions/slides.smk"


# A cohort's part of a run of several (parent_outdir set) reads the run's tiles; the
# run tiles each slide once.
if OWNS_SLIDES:

    # tiling.slides_per_job 1 (default): one job per slide, which writes the slide's files.
    if TILE_SLIDES_PER_JOB == 1:

        rule tile:
            input:
                slide_input,
            output:
                status=f"{TILES_WC}/{{slide}}.tile.json",
                tiles=tile_folder(),
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

    else:
        # tiling.slides_per_job > 1: one process per batch of slides (a consistent hash of
        # the slide id, as the encoder jobs'); each slide is tiled as its own job would
        # (per-slide status, slides.on_error per slide) into .staged/ ...
        for batch, ids in enumerate(slide_batches(TILE_SLIDES_PER_JOB)):

            rule:
                name:
                    f"tile_batch_{batch}"
                input:
                    tile_batch_input(ids),
                output:
                    status=staged(ids, ".tile.json"),
                    tiles=staged(ids),
                log:
                    f"{OUT}/logs/tile{{geometry}}/batch_{batch}.log",
                benchmark:
                    f"{OUT}/benchmarks/tile{{geometry}}/batch_{batch}.tsv"
                conda:
                    env_file("slides")
                threads: 1
                resources:
                    mem_mb=scaled_mem(2000),
                    runtime=scaled_runtime(30 + len(ids)),
                params:
                    batch=tile_batch_args(ids),
                    settings=tile_settings,
                    on_error=config["slides"]["on_error"],
                    cmta=CMTA,
                    version=VERSION,
                shell:
                    "{params.cmta} tile {params.batch} --settings {params.settings:q} "
                    "--on-error {params.on_error} > {log:q} 2>&1"

        # ... and this local job moves them into place. It records what the one-slide tile
        # job records (the slide file, the tiling's settings): a changed one reruns the
        # slide's batch; another slides_per_job (> 1) reruns nothing.
        rule tile:
            input:
                status=f"{STAGED}/{{slide}}.tile.json",
                tiles=f"{STAGED}/{{slide}}",
                slide=slide_input,
            output:
                status=f"{TILES_WC}/{{slide}}.tile.json",
                tiles=tile_folder(),
            log:
                f"{OUT}/logs/tile{{geometry}}/{{slide}}.log",
            localrule: True
            conda:
                env_file("slides")
            params:
                slide=slide_file,
                args=tile_args,
                tiling=tile_result_settings,
                on_error=config["slides"]["on_error"],
                version=VERSION,
            shell:
                "mv -f {input.tiles:q} {output.tiles:q} && "
                "mv -f {input.status:q} {output.status:q} && "
                "echo {output.tiles:q} {output.status:q}: from {input.tiles:q} > {log:q}"

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
