# The demo cohort (config section `demo`, config/demo/config.yaml): synthetic slides,
# six-family genomics and survival with risk planted in both (cmta demo-cohort), written
# before anything reads them, and the models' c-index beside the planted risk's
# (cmta demo-summary). See cmta_pipeline/demo/cohort.py for what is planted and how.
DEMO_DIR = config["demo"]["dir"].rstrip("/")


rule demo_cohort:
    input:
        families=config["demo"]["families"],
    output:
        slides=list(SLIDES["path"]),
        genomics=f"{DEMO_DIR}/genomics.csv",
        patients=f"{DEMO_DIR}/patients.tsv",
        planted=f"{DEMO_DIR}/planted.json",
    log:
        f"{OUT}/logs/demo_cohort.log",
    benchmark:
        f"{OUT}/benchmarks/demo_cohort.tsv"
    conda:
        env_file("demo")
    threads: 2
    resources:
        mem_mb=scaled_mem(1000),
        runtime=scaled_runtime(30),
    params:
        outdir=lambda wc, output: os.path.dirname(output.planted),
        settings=json.dumps(
            {k: v for k, v in config["demo"].items() if k not in ("dir", "families")}
        ),
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} demo-cohort --families {input.families:q} -o {params.outdir:q} "
        "--settings {params.settings:q} --workers {threads} > {log:q} 2>&1"


rule demo_encoder:
    input:
        slides=rules.demo_cohort.output.slides,
    output:
        f"{DEMO_DIR}/encoder.pth",
    log:
        f"{OUT}/logs/demo_encoder.log",
    benchmark:
        f"{OUT}/benchmarks/demo_encoder.tsv"
    conda:
        env_file("demo")
    threads: 1
    resources:
        mem_mb=scaled_mem(2000),
        runtime=scaled_runtime(30),
    params:
        # the tiling's patch at the demo slides' resolution, and the encoder's input side
        patch_px=round(
            config["tiling"]["patch_size_px"]
            * config["tiling"]["target_mpp"]
            / config["demo"]["mpp"]
        ),
        input_px=config["tiling"]["encoder_input_px"],
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} demo-encoder {input.slides:q} -o {output:q} --patch-px {params.patch_px} "
        "--input-px {params.input_px} > {log:q} 2>&1"


rule demo_summary:
    input:
        patients=rules.demo_cohort.output.patients,
        cindex=f"{OUT}/report/cindex.tsv",
    output:
        report(
            f"{OUT}/report/planted_risk.tsv",
            caption="../report/planted_risk.rst",
            category="Results",
        ),
    log:
        f"{OUT}/logs/demo_summary.log",
    benchmark:
        f"{OUT}/benchmarks/demo_summary.tsv"
    localrule: True
    conda:
        env_file("demo")
    threads: 1
    resources:
        mem_mb=scaled_mem(1000),
        runtime=scaled_runtime(10),
    params:
        train_dir=f"{OUT}/train",
        cmta=CMTA,
        version=VERSION,
    shell:
        "{params.cmta} demo-summary {input.patients:q} {input.cindex:q} "
        "--train-dir {params.train_dir:q} -o {output:q} > {log:q} 2>&1 && cat {log:q}"
