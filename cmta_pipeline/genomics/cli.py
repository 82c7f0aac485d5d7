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
    p.add_argument(
        "--rnaseq", help="RNA-seq: a gene x sample matrix (cBioPortal data_mrna_*.txt, RSEM or "
        "z-scores) or a folder of GDC STAR-counts files (with --gdc-sample-sheet)",
    )
    p.add_argument(
        "--cnv", help="copy number, GISTIC -2..2: cBioPortal data_cna.txt (wide) or "
        "data_cna_discrete.txt (long), or a folder of GDC gene-level copy-number files",
    )
    p.add_argument("--maf", help="mutations: a MAF (.gz ok) or a folder of MAFs (GDC masked somatic, one per sample)")
    p.add_argument("--clinical", help="cBioPortal data_clinical_patient(s).txt or GDC clinical.tsv")
    p.add_argument(
        "--clinical-samples",
        help="cBioPortal data_clinical_sample.txt (PATIENT_ID, SAMPLE_ID[, SAMPLE_TYPE]): each sample's "
        "patient, for studies whose sample ids do not start with the patient id",
    )
    p.add_argument("--gdc-sample-sheet", help="GDC sample sheet: which sample each per-sample file belongs to")
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
        "--missing-survival", choices=["error", "drop", "keep"], default="error",
        help="a patient with no survival time: stop (default), drop it and list it in the audit, "
        "or keep it with empty survival (new patients for `cmta predict`; the survival "
        "columns and --clinical may then be absent; `cmta cohort` audits such patients as 'no survival')",
    )
    p.add_argument(
        "--nonpositive-followup", choices=["drop", "keep", "error"], default="drop",
        help="a follow-up of 0 months or below: drop the patient and list it in the audit "
        "(default), keep it when it is 0 (valid for scikit-survival), or stop",
    )


def run(args: argparse.Namespace) -> int:
    from .families import read_families
    from .join import load_per_modality
    from .maf import DEFAULT_VARIANT_CLASSES
    from .mcat import DEFAULT_META_COLUMNS, load_wide_table
    from .output import write_genomics

    families = read_families(args.families)
    per_modality = any([args.rnaseq, args.cnv, args.maf, args.clinical])
    if args.table and (args.gdc_sample_sheet or args.gene_aliases or args.clinical_samples):
        raise CMTAError(
            "--gdc-sample-sheet, --gene-aliases and --clinical-samples are for per-modality files, not a wide table"
        )
    if args.table and per_modality:
        raise CMTAError("give either a wide table or per-modality files (--rnaseq/--cnv/--maf/--clinical), not both")
    if args.table:
        meta = list(DEFAULT_META_COLUMNS)
        if args.meta_columns:
            meta += [c.strip() for c in args.meta_columns.split(",") if c.strip()]
        data = load_wide_table(
            args.table, args.unsuffixed, meta, args.missing_survival, args.nonpositive_followup,
            args.drop_last_column,
        )
    elif per_modality:
        classes = (
            [c.strip() for c in args.variant_classes.split(",") if c.strip()]
            if args.variant_classes else DEFAULT_VARIANT_CLASSES
        )
        data = load_per_modality(
            args.rnaseq, args.cnv, args.maf, args.clinical, classes, args.missing_survival,
            args.nonpositive_followup, args.gdc_sample_sheet, args.rnaseq_unit,
            args.gene_aliases, families, args.clinical_samples,
        )
    else:
        raise CMTAError("no genomic input: give a wide TABLE or per-modality files")
    expanded = write_genomics(data, families, args.outdir)
    log.info(
        "%d patients (%d dropped); family sizes %s -> %s",
        len(data.survival), len(data.dropped), [len(v) for v in expanded.values()], args.outdir,
    )
    return 0


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "genomics": (add_arguments, run),
}
