# Input and argument functions of the heatmaps stage's rules (rules/heatmaps.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.

HEATMAPS = {
    "runs": ["cmta"],
    "cases": None,
    "top_k": 2,
    "threads": 2,
    "mem_mb": 8000,
    "runtime": 60,
    **(config.get("heatmaps") or {}),
}
HEATMAP_MODELS = (
    "cmta",
    "attmil",
    "transmil",
    "dualtrans",
    "clam_sb",
    "clam_mb",
    "porpoise",
)


def heatmap_runs():
    return [
        r
        for r in HEATMAPS["runs"]
        if r in train_runs() and run_model(r) in HEATMAP_MODELS
    ]


def heatmap_targets():
    """One heatmaps.tsv per run to draw (final_targets in common.smk adds them)."""
    if not train_targets():
        return []
    return expand(f"{OUT}/heatmaps/{{run}}/heatmaps.tsv", run=heatmap_runs())


def heatmap_args(wildcards):
    if HEATMAPS["cases"]:
        cases = ",".join(map(str, HEATMAPS["cases"]))
        return f"--cases {shlex.quote(cases)}"
    return f"--top-k {int(HEATMAPS['top_k'])}"
