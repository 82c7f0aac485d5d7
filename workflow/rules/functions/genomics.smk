# Input and argument functions of the genomics stage's rules (rules/genomics.smk, which
# includes this file); they read the config and the slide sheet of rules/common.smk.

GENOMICS = config["genomics"]
GENOMICS_OUTPUTS = [
    "families.tsv",
    "features.tsv",
    "patients.tsv",
    "dropped.tsv",
    "matrix.tsv.gz",
    "audit.tsv",
]


def genomics_configured():
    return bool(GENOMICS["table"] or GENOMICS["clinical"] or GENOMICS["cbioportal"])


def clinical_files():
    """The configured clinical table(s): one path or a list (clinical.tsv, follow_up.tsv)."""
    clinical = GENOMICS["clinical"]
    if not clinical:
        return []
    return [clinical] if isinstance(clinical, str) else list(clinical)


def families_file():
    """The configured family file, or the downloaded default (MCAT's signatures.csv)."""
    return GENOMICS["families"] or f"{OUT}/resources/signatures.csv"


def genomics_input(wildcards):
    files = {"families": families_file()}
    for key in (
        "table",
        "cbioportal",
        "gene_panels",
        "rnaseq",
        "cnv",
        "maf",
        "clinical_samples",
        "gdc_sample_sheet",
        "gene_aliases",
    ):
        if GENOMICS[key]:
            files[key] = GENOMICS[key]
    if clinical_files():
        files["clinical"] = clinical_files()
    return files


def genomics_args(wildcards):
    input = genomics_input(wildcards)
    args = [f"--families {shlex.quote(input['families'])}"]
    if GENOMICS["table"]:
        args.insert(0, shlex.quote(input["table"]))
        if GENOMICS["unsuffixed"]:
            args.append(f"--unsuffixed {GENOMICS['unsuffixed']}")
        if GENOMICS["meta_columns"]:
            args.append(
                f"--meta-columns {shlex.quote(','.join(GENOMICS['meta_columns']))}"
            )
    for key in ("cbioportal", "rnaseq", "cnv", "maf"):
        if GENOMICS[key]:
            args.append(f"--{key} {shlex.quote(input[key])}")
    if clinical_files():
        args.append("--clinical " + " ".join(shlex.quote(f) for f in clinical_files()))
    if GENOMICS["variant_classes"]:
        args.append(
            f"--variant-classes {shlex.quote(','.join(GENOMICS['variant_classes']))}"
        )
    if GENOMICS["table"] and GENOMICS["drop_last_column"]:
        args.append("--drop-last-column")
    if not GENOMICS["table"]:
        for key in (
            "clinical_samples",
            "gdc_sample_sheet",
            "gene_aliases",
            "gene_panels",
        ):
            if GENOMICS[key]:
                args.append(f"--{key.replace('_', '-')} {shlex.quote(input[key])}")
        args.append(f"--rnaseq-unit {GENOMICS['rnaseq_unit']}")
    args.append(f"--missing-survival {GENOMICS['missing_survival']}")
    args.append(f"--nonpositive-followup {GENOMICS['nonpositive_followup']}")
    return " ".join(args)
