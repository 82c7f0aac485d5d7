"""Gene x sample tables as cBioPortal (and GISTIC) ship them: a wide matrix
(``data_mrna_*.txt``, ``data_cna.txt``, ``all_thresholded.by_genes.txt``) or cBioPortal's
discrete long CNA layout (Hugo_Symbol, Entrez_Gene_Id, Sample_Id, Value)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .aliases import apply_aliases
from .samples import TCGA_SAMPLE, SampleMap, samples_to_patients
from .tables import (
    NA_VALUES,
    check_unique_header,
    leading_comment_lines,
    numeric_block,
    read_header,
    read_table,
)

GENE_COLUMNS = ("Hugo_Symbol", "Gene Symbol", "gene_name", "Gene", "gene", "gene_symbol")


ANNOTATION_COLUMNS = {
    "Entrez_Gene_Id", "Locus ID", "Cytoband", "gene_id", "gene_type", "Gene ID",
    "Entrez_Gene_ID", "Description",
}


LONG_SAMPLE_COLUMNS = ("Sample_Id", "SAMPLE_ID", "Sample_ID", "sample_id")


#: Discrete copy-number levels cBioPortal's validator accepts (validateData.py).
CNA_LEVELS = (-2, -1.5, -1, 0, 1, 2)


def _layout_error(path: Path, col: str, value) -> CMTAError:
    return CMTAError(
        f"{path}: layout not recognised: column {col!r} holds sample ids such as {value!r}, "
        "not values; a gene x sample matrix has one column per sample (header Hugo_Symbol, "
        "[Entrez_Gene_Id], sample ids), cBioPortal's discrete long CNA layout the columns "
        "Hugo_Symbol, Entrez_Gene_Id, Sample_Id, Value"
    )


def read_gene_table(
    path: str | os.PathLike, modality: str, aliases: dict[str, str] | None = None,
    audit: list | None = None,
) -> pd.DataFrame:
    """A gene x sample table as floats (index gene symbols, columns sample ids).

    Layout recognised from the header: a wide matrix (cBioPortal ``data_mrna_*.txt``,
    ``data_cna.txt``, GISTIC ``all_thresholded.by_genes.txt``: a gene column
    Hugo_Symbol/Gene Symbol/gene_name/Gene, optional annotation columns such as
    Entrez_Gene_Id/Locus ID/Cytoband, one column per sample) or cBioPortal's discrete
    long CNA layout (Hugo_Symbol, Entrez_Gene_Id, Sample_Id, Value, ...). ``#`` header
    rows are skipped, ``NA``/``[Not Available]`` are missing. Duplicate gene symbols
    are averaged.
    """
    path = Path(path)
    header = read_header(path, "," if path.name.lower().removesuffix(".gz").endswith(".csv") else "\t")
    gene_col = next((c for c in GENE_COLUMNS if c in header), None)
    if gene_col is None:
        raise CMTAError(
            f"{path}: layout not recognised: no gene symbol column (expected one of "
            f"{', '.join(GENE_COLUMNS)}; header starts {', '.join(header[:4])})"
        )
    sample_col = next((c for c in LONG_SAMPLE_COLUMNS if c in header), None)
    long_layout = sample_col is not None and "Value" in header
    if not long_layout:
        check_unique_header(path, header, "sample")
    # only the id columns as text: the values parse as floats in the C reader (fast)
    text = {c: str for c in header if c in (gene_col, sample_col) or c in ANNOTATION_COLUMNS}
    df = read_table(path, modality, dtype=text, na_values=NA_VALUES, keep_default_na=False)
    df = df[df[gene_col].notna()]
    first_line = leading_comment_lines(path) + 2  # file line of the first data row
    if long_layout:
        values = _long_values(path, df, gene_col, sample_col, first_line, aliases, audit)
    else:
        values = _wide_values(path, df, gene_col, aliases, audit)
    if modality == "cnv":
        values = discrete_levels(path, values, audit)
    return values


def discrete_levels(path: Path, values: pd.DataFrame, audit: list | None) -> pd.DataFrame:
    """Discrete copy number as cBioPortal's validator accepts it: -2 (deep deletion), -1.5
    (partial deletion, MSK-IMPACT), -1, 0, 1, 2, or missing. -1.5 becomes -2, as
    cBioPortal's importer and portal treat it (a deep deletion). Any other value (a log2
    ratio, an absolute copy number) is an error."""
    bad = values.notna() & ~values.isin(CNA_LEVELS)
    if bad.to_numpy().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise CMTAError(
            f"{path}: gene {values.index[r]}, sample {values.columns[c]}: copy-number value "
            f"{values.iat[r, c]:g} is not a discrete level (-2, -1.5, -1, 0, 1, 2 as in "
            "cBioPortal's data_cna.txt or GISTIC's all_thresholded.by_genes.txt); log2 "
            "ratios and segment files are not read"
        )
    partial = values == -1.5
    n = int(partial.to_numpy().sum())
    if n:
        values = values.mask(partial, -2.0)
        if audit is not None:
            audit.append((str(path), "copy number -1.5 (partial deletion) read as -2 (deep deletion), as cBioPortal does",
                          n, ""))
    return values


def read_gene_matrix(
    path: str | os.PathLike, modality: str, aliases: dict[str, str] | None = None,
    audit: list | None = None, sample_map: SampleMap | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """A gene x sample file (:func:`read_gene_table`) as patient x ``GENE_<modality>``.

    Returns (matrix, patient -> drop reason)."""
    values = read_gene_table(path, modality, aliases, audit)
    return samples_to_patients(values, modality, str(path), audit, sample_map)


def _long_values(path, df, gene_col, sample_col, first_line, aliases, audit) -> pd.DataFrame:
    """Gene x sample values of cBioPortal's discrete long layout (one row per gene and
    sample); a gene and sample given twice is an error."""
    if audit is not None:
        audit.append((str(path), "layout", len(df), f"long (rows: {gene_col}, {sample_col}, Value)"))
    df = df[df[sample_col].notna()]
    rows = [f"line {first_line + i}" for i in df.index]
    vals = numeric_block(df[["Value"]], str(path), rows)["Value"]
    genes = df[gene_col].astype(str).str.strip()
    samples = df[sample_col].astype(str).str.strip()
    long = pd.DataFrame({"gene": genes.to_numpy(), "sample": samples.to_numpy(), "value": vals.to_numpy()})
    dup = long.duplicated(["gene", "sample"], keep=False)
    if dup.any():
        d = long[dup]
        g, s = d["gene"].iloc[0], d["sample"].iloc[0]
        same = dup & (long["gene"] == g) & (long["sample"] == s)
        lines = [rows[i] for i in np.flatnonzero(same.to_numpy())]
        raise CMTAError(f"{path}: gene {g}, sample {s}: given twice ({', '.join(lines)}): duplicate sample rows")
    long["gene"] = apply_aliases(long["gene"], aliases or {}, str(path), audit)
    values = long.pivot_table(
        index="gene", columns="sample", values="value", aggfunc="mean", sort=False, dropna=False
    )
    values.columns.name = None
    values.index.name = None
    return values


def _wide_values(path, df, gene_col, aliases, audit) -> pd.DataFrame:
    """Gene x sample values of a wide matrix; duplicate gene symbols are averaged."""
    samples = [c for c in df.columns if c != gene_col and c not in ANNOTATION_COLUMNS]
    if not samples:
        raise CMTAError(f"{path}: no sample columns besides the gene column {gene_col!r}")
    if audit is not None:
        audit.append((str(path), "layout", len(df), f"gene x sample matrix ({len(samples)} sample columns)"))
    genes = df[gene_col].astype(str).str.strip()
    try:
        values = numeric_block(df[samples], str(path), [f"gene {g}" for g in genes])
    except CMTAError:
        for col in samples:  # a long file without its Value column, or another mix-up
            s = df[col].dropna()
            if len(s) and pd.to_numeric(s, errors="coerce").isna().all() and s.str.match(TCGA_SAMPLE).any():
                raise _layout_error(path, col, s.iloc[0]) from None
        raise
    values.index = apply_aliases(genes, aliases or {}, str(path), audit).to_numpy()
    values = values.groupby(level=0, sort=False).mean()
    return values
