# Input and argument functions of the slides stage's rules (rules/slides.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.


def slide_files(ids):
    """The slide files of ``ids``, leaving out missing ones: `cmta tile` then reports them,
    and with slides.on_error: skip the rest of the cohort proceeds. (The demo's slides are
    made by the rule demo_cohort.)"""
    paths = [SLIDES.loc[s, "path"] for s in ids]
    return [p for p in paths if os.path.exists(p) or config.get("demo")]


def slide_input(wildcards):
    return slide_files([wildcards.slide])


def tile_args(wildcards):
    row = SLIDES.loc[wildcards.slide]
    args = f"--slide-id {wildcards.slide} --case-id {shlex.quote(str(row.case_id))} --stain {row.stain}"
    if row.mpp == row.mpp:  # not NaN
        args += f" --mpp {row.mpp}"
    return args


def tiled_slides():
    """Slide ids tiled successfully (evaluated once the checkpoint tile_summary has run)."""
    summary = pd.read_csv(
        checkpoints.tile_summary.get().output.summary, sep="\t", dtype={"slide_id": str}
    )
    return summary.loc[summary["status"] == "ok", "slide_id"].tolist()
