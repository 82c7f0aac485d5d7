"""`cmta genomics`: genomic profiles grouped into the six gene families."""

from __future__ import annotations

import argparse
import logging

from ..errors import CMTAError

# ---- cmta genomics --------------------------------------------------------------


log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "table", nargs="?",
        help="the MCAT/CMTA wide table (CSV/TSV, .gz ok; one row per slide); "
        "omit it to use per-modality files",
    )
    p.add_argument("--families", required=True, help="family file (columns = families, rows = gene symbols)")
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    p.add_argument(
        "--unsuffixed", choices=["mut", "cnv", "rnaseq", "ignore"],
        help="what gene columns without a _rnaseq/_cnv/_mut suffix are; default: left out "
        "(as the released MCAT/CMTA code does) with a note in audit.tsv",
    )
    p.add_argument(
        "--drop-last-column", action="store_true",
        help="leave out the wide table's last column, as the released MCAT/CMTA dataset code "
        "does (BLCA, LUAD: ZXDC_rnaseq, one transcription factor fewer)",
    )
    p.add_argument(
        "--meta-columns", default=None,
        help="comma-separated extra non-gene columns of the wide table (besides case_id, "
        "slide_id, site, is_female, oncotree_code, age, survival_months, censorship, train)",
    )
    add_per_modality_arguments(p)


def add_per_modality_arguments(p: argparse.ArgumentParser) -> None:
    """The options of per-modality inputs (cBioPortal, GDC) and of survival."""
    p.add_argument(
        "--rnaseq", help="RNA-seq: a gene x sample matrix (cBioPortal data_mrna_*.txt, RSEM or "
        "z-scores) or a folder of GDC STAR-counts files (with --gdc-sample-sheet)",
    )
    p.add_argument(
        "--cnv", help="discrete copy number -2..2 (-1.5, MSK's partial deletion, read as -2): cBioPortal "
        "data_cna.txt (wide) or data_cna_discrete.txt (long), or a folder of GDC gene-level copy-number files",
    )
    p.add_argument(
        "--maf", help="mutations: a MAF (.gz ok) or a folder of MAFs (*.maf, *.maf.gz, *.txt, *.txt.gz; "
        "GDC masked somatic, one per sample)",
    )
    p.add_argument(
        "--clinical", nargs="+",
        help="cBioPortal data_clinical_patient(s).txt, or the GDC's clinical.tsv (and its follow_up.tsv, "
        "or the folder of both)",
    )
    p.add_argument(
        "--cbioportal", metavar="STUDY_DIR",
        help="a cBioPortal study folder as downloaded: its meta_*.txt files say which file is the "
        "clinical, sample, copy-number, mutation and expression table; its case lists and gene "
        "panels say who was profiled for which genes (--rnaseq/--cnv/--maf/--clinical replace its files)",
    )
    p.add_argument(
        "--gene-panels", metavar="DIR",
        help="folder of cBioPortal gene panel files (data_gene_panel_<panel>.txt: stable_id, gene_list) "
        "for the panels a study uses but does not ship (MSK-IMPACT)",
    )
    p.add_argument(
        "--clinical-samples",
        help="cBioPortal data_clinical_sample.txt (PATIENT_ID, SAMPLE_ID[, SAMPLE_TYPE]): each sample's "
        "patient, for studies whose sample ids do not start with the patient id",
    )
    p.add_argument(
        "--gdc-sample-sheet",
        help="the GDC cart's sample sheet (either layout): each file's Case ID (the patient, for every GDC "
        "project) and sample; per-sample folders (STAR counts, copy number) need it, MAF folders use it",
    )
    p.add_argument(
        "--rnaseq-unit", default="tpm_unstranded",
        help="column of the GDC STAR-counts files to use (default tpm_unstranded; log1p is applied)",
    )
    p.add_argument("--gene-aliases", help="table alias<TAB>symbol mapping the data's gene names to the family file's")
    p.add_argument(
        "--variant-classes", default=None,
        help="comma-separated MAF Variant_Classification values counted as a mutation "
        "(default: the protein-changing classes)",
    )
    p.add_argument(
        "--missing-survival", choices=["drop", "error", "keep"], default="drop",
        help="a patient without usable survival (no time, or no status): drop it and list it with its "
        "reason in dropped.tsv and audit.tsv (default), stop at it (error; only patients with every "
        "modality count), or keep it with empty survival (new patients for `cmta predict`; the "
        "survival columns and --clinical may then be absent; `cmta cohort` audits such patients as "
        "'no survival')",
    )
    p.add_argument(
        "--nonpositive-followup", choices=["drop", "keep", "error"], default="drop",
        help="a follow-up of 0 months or below: drop the patient and list it in the audit "
        "(default), keep it when it is 0 (valid for scikit-survival), or stop",
    )


def run(args: argparse.Namespace) -> int:
    from ..fileio import fresh_outputs
    from ..ids import check_id
    from .families import read_families
    from .output import AUDIT_FILE, GENOMICS_FILES, MARKER, write_genomics

    # a failed run leaves no earlier run's outputs behind to be taken for its own
    with fresh_outputs(args.outdir, (*GENOMICS_FILES, AUDIT_FILE), marker=MARKER):
        families = read_families(args.families)
        data = load(args, families)
        for case in {*data.matrix.index, *data.survival.index}:  # whichever reader: cmta_pipeline/ids.py
            check_id(case, "case id", "the genomic and clinical tables")
        if data.survival.empty:
            raise CMTAError("no patient kept: every patient was dropped (see the reasons with --missing-survival keep)")
        expanded = write_genomics(data, families, args.outdir)
    log.info(
        "%d patients (%d dropped); family sizes %s -> %s",
        len(data.survival), len(data.dropped), [len(v) for v in expanded.values()], args.outdir,
    )
    return 0


def load(args: argparse.Namespace, families):
    """The genomic data of the command's inputs: the wide table or per-modality files."""
    from .join import load_per_modality
    from .maf import DEFAULT_VARIANT_CLASSES
    from .mcat import DEFAULT_META_COLUMNS, load_wide_table

    per_modality = any([args.rnaseq, args.cnv, args.maf, args.clinical, args.cbioportal])
    if args.table and (args.gdc_sample_sheet or args.gene_aliases or args.clinical_samples or args.gene_panels):
        raise CMTAError(
            "--gdc-sample-sheet, --gene-aliases, --clinical-samples and --gene-panels are for per-modality "
            "files, not a wide table"
        )
    if args.table and per_modality:
        raise CMTAError(
            "give either a wide table or per-modality files (--rnaseq/--cnv/--maf/--clinical/--cbioportal), not both"
        )
    if args.table:
        meta = list(DEFAULT_META_COLUMNS)
        if args.meta_columns:
            meta += [c.strip() for c in args.meta_columns.split(",") if c.strip()]
        return load_wide_table(
            args.table, args.unsuffixed, meta, args.missing_survival, args.nonpositive_followup,
            args.drop_last_column,
        )
    if not per_modality:
        raise CMTAError("no genomic input: give a wide TABLE, per-modality files or --cbioportal STUDY_DIR")
    classes = (
        [c.strip() for c in args.variant_classes.split(",") if c.strip()]
        if args.variant_classes else DEFAULT_VARIANT_CLASSES
    )
    return load_per_modality(
        args.rnaseq, args.cnv, args.maf, args.clinical, classes, args.missing_survival,
        args.nonpositive_followup, args.gdc_sample_sheet, args.rnaseq_unit,
        args.gene_aliases, families, args.clinical_samples, study=args.cbioportal,
        gene_panels=args.gene_panels,
    )


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "genomics": (add_arguments, run),
}
