# Input and argument functions of the cohort stage's rules (rules/cohort.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.

COHORT = config["cohort"]


def cohort_targets():
    return [f"{OUT}/cohort/folds.json"] if genomics_configured() else []


def cohort_slides(wildcards):
    """The tiling summary (slide list + failed slides) when the cohort uses slides."""
    if COHORT["with_slides"] and len(SLIDES):
        return {"tiles_summary": f"{TILES_HERE}/summary.tsv"}
    return {}


def cohort_args(wildcards):
    args = []
    slides = cohort_slides(wildcards)
    if slides:
        args.append(f"--tiles-summary {shlex.quote(slides['tiles_summary'])}")
    if COHORT["splits"]:
        args.append(f"--splits {shlex.quote(COHORT['splits'])}")
    else:
        args.append(f"--n-folds {COHORT['n_folds']}")
    args.append(f"--seed {COHORT['seed']}")
    if COHORT["split_by"] == "site":
        args.append("--split-by site")
        if config["slides"].get("sheet"):
            args.append(f"--site-sheet {shlex.quote(str(config['slides']['sheet']))}")
    args.append(f"--n-bins {COHORT['n_bins']}")
    args.append(f"--labels-from {COHORT['labels_from']}")
    args.append(f"--inner-val-fraction {COHORT['inner_val_fraction']}")
    if COHORT["log1p_rnaseq"]:
        args.append("--log1p-rnaseq")
    if not COHORT["standardize"]:
        args.append("--no-standardize")
    if not COHORT["drop_constant"]:
        args.append("--keep-constant")
    return " ".join(args)
