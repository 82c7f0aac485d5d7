"""Mutations from MAF files (cBioPortal ``data_mutations*.txt``, GDC masked somatic MAFs)
as a patient x ``GENE_mut`` 0/1 matrix."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from .aliases import apply_aliases
from .samples import SampleMap, choose_samples, sample_audit
from .tables import NA_VALUES, read_header, read_table

#: MAF variant classes counted as a mutation by default: the protein-changing ones
#: (cBioPortal's "non-synonymous" set). Silent, intronic, UTR and flank variants are not.
DEFAULT_VARIANT_CLASSES = (
    "Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Frame_Shift_Ins",
    "In_Frame_Del", "In_Frame_Ins", "Splice_Site", "Nonstop_Mutation",
    "Translation_Start_Site",
)


def maf_files(path: str | os.PathLike) -> list[Path]:
    """A MAF, or every ``*.maf``/``*.maf.gz``/``*.txt`` MAF under a folder (the GDC's
    masked somatic MAFs, one per sample)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith((".maf", ".maf.gz")))
        if not files:
            raise CMTAError(f"{path}: no *.maf or *.maf.gz files in this folder")
        return files
    if not path.is_file():
        raise CMTAError(f"MAF file not found: {path}")
    return [path]


def read_maf(
    path: str | os.PathLike, variant_classes=DEFAULT_VARIANT_CLASSES,
    aliases: dict[str, str] | None = None, audit: list | None = None,
    sample_map: SampleMap | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """MAF(s) as a patient x ``GENE_mut`` 0/1 matrix.

    ``path``: a MAF (cBioPortal ``data_mutations*.txt``, a merged GDC MAF; ``.gz`` ok) or
    a folder of them (GDC masked somatic MAFs, one per sample). A gene is 1 for a
    patient when the chosen tumour sample has at least one variant of a counted class.
    Every patient with a sample in the MAF is taken as sequenced (0 for genes without a
    counted variant). Columns: genes with any counted variant.
    """
    need = ("Hugo_Symbol", "Variant_Classification", "Tumor_Sample_Barcode")
    parts = []
    for f in maf_files(path):
        header = read_header(f)
        miss = [c for c in need if c not in header]
        if miss:
            raise CMTAError(f"{f}: missing MAF column(s) {', '.join(miss)}")
        # only the three columns: a merged GDC MAF has 140 columns and millions of rows
        parts.append(read_table(f, "MAF", dtype=str, usecols=list(need), na_values=NA_VALUES, keep_default_na=False))
    df = pd.concat(parts, ignore_index=True)
    source = str(path)
    df["Hugo_Symbol"] = apply_aliases(df["Hugo_Symbol"].fillna(""), aliases or {}, source, audit)
    barcodes = df["Tumor_Sample_Barcode"].dropna().astype(str).str.strip().unique()
    chosen, reasons = choose_samples(barcodes, sample_map)
    if audit is not None:
        audit.append((source, "MAF files read", len(parts), ""))
        audit.append((source, "variants read", len(df), ""))
        audit.extend(sample_audit(source, barcodes, chosen, sample_map))
    keep = df["Tumor_Sample_Barcode"].isin(set(chosen.values()))
    counted = df[keep & df["Variant_Classification"].isin(set(variant_classes)) & (df["Hugo_Symbol"] != "")]
    sample_to_patient = {bc: p for p, bc in chosen.items()}
    genes = sorted(counted["Hugo_Symbol"].astype(str).unique())
    mat = pd.DataFrame(0.0, index=sorted(chosen), columns=[f"{g}_mut" for g in genes])
    for bc, gene in zip(counted["Tumor_Sample_Barcode"], counted["Hugo_Symbol"]):
        mat.at[sample_to_patient[bc], f"{gene}_mut"] = 1.0
    mat.index.name = "case_id"
    return mat, reasons
