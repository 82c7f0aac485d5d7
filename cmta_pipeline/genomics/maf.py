"""Mutations from MAF files (cBioPortal ``data_mutations*.txt``, GDC masked somatic MAFs)
as a patient x ``GENE_mut`` 0/1 matrix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .aliases import apply_aliases
from .gdc_sheet import read_sample_sheet
from .panels import Profiled
from .samples import SampleMap, choose_samples, sample_audit
from .tables import NA_VALUES, examples, read_header, read_table

#: MAF variant classes counted as a mutation by default: the protein-changing ones
#: (cBioPortal's "non-synonymous" set). Silent, intronic, UTR and flank variants are not.
DEFAULT_VARIANT_CLASSES = (
    "Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Frame_Shift_Ins",
    "In_Frame_Del", "In_Frame_Ins", "Splice_Site", "Nonstop_Mutation",
    "Translation_Start_Site",
)
MAF_COLUMNS = ("Hugo_Symbol", "Variant_Classification", "Tumor_Sample_Barcode")
MAF_SUFFIXES = (".maf", ".maf.gz", ".txt", ".txt.gz")


def maf_files(path: str | os.PathLike) -> list[Path]:
    """A MAF, or every ``*.maf``, ``*.maf.gz``, ``*.txt`` and ``*.txt.gz`` file under a
    folder (the GDC's masked somatic MAFs, one per sample; cBioPortal's
    ``data_mutations.txt``). In a folder, a ``.txt`` file without the MAF columns (a
    ``gdc-client`` ``annotations.txt``) is not a MAF and is passed over by :func:`read_maf`."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(MAF_SUFFIXES)
                       and not p.name.startswith("."))
        if not files:
            raise CMTAError(f"{path}: no *.maf, *.maf.gz, *.txt or *.txt.gz files in this folder")
        return files
    if not path.is_file():
        raise CMTAError(f"MAF file not found: {path}")
    return [path]


def _read_files(path: Path, audit: list | None) -> tuple[pd.DataFrame, list[Path]]:
    """The three needed columns of every MAF of ``path`` (a column ``file`` says which)."""
    parts, used, skipped = [], [], []
    folder = path.is_dir()
    for f in maf_files(path):
        header = read_header(f)
        miss = [c for c in MAF_COLUMNS if c not in header]
        if miss and folder and f.name.lower().endswith((".txt", ".txt.gz")):
            skipped.append(f.name)
            continue
        if miss:
            raise CMTAError(f"{f}: missing MAF column(s) {', '.join(miss)}")
        # only the three columns: a merged GDC MAF has 140 columns and millions of rows
        df = read_table(f, "MAF", dtype=str, usecols=list(MAF_COLUMNS), na_values=NA_VALUES, keep_default_na=False)
        parts.append(df.assign(file=f.name))
        used.append(f)
    if not parts:
        raise CMTAError(f"{path}: none of its .txt files is a MAF (columns {', '.join(MAF_COLUMNS)})")
    if skipped and audit is not None:
        audit.append((str(path), "files not read: not a MAF", len(skipped), examples(skipped)))
    return pd.concat(parts, ignore_index=True), used


def sheet_barcodes(df: pd.DataFrame, sample_sheet, source: str, audit: list | None) -> SampleMap:
    """Tumor_Sample_Barcode -> (Case ID, sample type) of the MAFs the GDC sample sheet
    lists (by file name): for every GDC project, not only TCGA's barcodes."""
    sheet = read_sample_sheet(sample_sheet).set_index("file_name")
    out: SampleMap = {}
    listed = df["file"].isin(sheet.index)
    for name, g in df[listed].groupby("file"):
        row = sheet.loc[name]
        for bc in g["Tumor_Sample_Barcode"].dropna().astype(str).str.strip().unique():
            out[bc] = (row["case_id"], int(row["type_code"]))
    if audit is not None and (~listed).any():
        names = sorted(set(df.loc[~listed, "file"]))
        audit.append((source, "MAFs not in the sample sheet (patients from their barcodes)", len(names), examples(names)))
    return out


def read_maf(
    path: str | os.PathLike, variant_classes=DEFAULT_VARIANT_CLASSES,
    aliases: dict[str, str] | None = None, audit: list | None = None,
    sample_map: SampleMap | None = None, profiled: Profiled | None = None,
    sample_sheet: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """MAF(s) as a patient x ``GENE_mut`` 0/1 matrix.

    ``path``: a MAF (cBioPortal ``data_mutations*.txt``, a merged GDC MAF; ``.gz`` ok) or
    a folder of them (GDC masked somatic MAFs, one per sample). A gene is 1 for a
    patient when the chosen tumour sample has at least one variant of a counted class.
    Sequenced samples: those in the MAF, and those ``profiled`` lists (a cBioPortal
    study's ``cases_sequenced`` case list: sequenced, no mutation called), 0 for genes
    without a counted variant; genes off the sample's gene panel are missing (NaN).
    ``sample_sheet``: a GDC sample sheet giving each MAF file's Case ID. Columns: genes
    with any counted variant.
    """
    path = Path(path)
    source = str(path)
    df, files = _read_files(path, audit)
    sample_map = dict(sample_map or {})
    if sample_sheet is not None:
        sample_map.update(sheet_barcodes(df, sample_sheet, source, audit))
    df["Hugo_Symbol"] = apply_aliases(df["Hugo_Symbol"].fillna(""), aliases or {}, source, audit)
    in_maf = list(df["Tumor_Sample_Barcode"].dropna().astype(str).str.strip().unique())
    listed = sorted(set(profiled.samples) - set(in_maf)) if profiled and profiled.samples else []
    barcodes = in_maf + listed
    chosen, reasons = choose_samples(barcodes, sample_map)
    if audit is not None:
        audit.append((source, "MAF files read", len(files), ""))
        audit.append((source, "variants read", len(df), ""))
        if listed:
            audit.append((source, "samples sequenced without a mutation (case list): all zero", len(listed),
                          examples(listed)))
        audit.extend(sample_audit(source, barcodes, chosen, sample_map))
    keep = df["Tumor_Sample_Barcode"].isin(set(chosen.values()))
    counted = df[keep & df["Variant_Classification"].isin(set(variant_classes)) & (df["Hugo_Symbol"] != "")]
    sample_to_patient = {bc: p for p, bc in chosen.items()}
    genes = sorted(counted["Hugo_Symbol"].astype(str).unique())
    mat = pd.DataFrame(0.0, index=sorted(chosen), columns=[f"{g}_mut" for g in genes])
    for bc, gene in zip(counted["Tumor_Sample_Barcode"], counted["Hugo_Symbol"]):
        mat.at[sample_to_patient[bc], f"{gene}_mut"] = 1.0
    if profiled is not None:
        by_sample = pd.DataFrame(mat.T.to_numpy(), index=genes, columns=[chosen[p] for p in mat.index])
        masked = profiled.mask(by_sample, audit, source)
        mat = pd.DataFrame(masked.T.to_numpy(), index=mat.index, columns=mat.columns)
    mat.index.name = "case_id"
    return mat.astype(np.float64), reasons
