"""The six gene families of MCAT/CMTA: the family file (MCAT's ``signatures.csv`` layout:
one column per family, gene symbols in rows) and its expansion against the data's
``GENE_<modality>`` columns, in sorted feature-name order as in the released code."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CMTAError
from .data import MODALITIES
from .tables import read_table


def read_families(path: str | os.PathLike) -> dict[str, list[str]]:
    """Family name -> gene symbols, in the file's column order.

    The file has one column per family and gene symbols in the rows (ragged: empty
    cells pad the shorter columns). Comma-separated unless it ends in .tsv/.txt.
    """
    path = Path(path)
    df = read_table(path, "family", default_sep=",", dtype=str)
    if df.shape[1] == 0:
        raise CMTAError(f"{path}: no family columns (expected one column per gene family)")
    families: dict[str, list[str]] = {}
    for col in df.columns:
        if str(col).startswith("Unnamed:"):
            raise CMTAError(
                f"{path}: column {df.columns.get_loc(col) + 1} has no family name in the header"
            )
        genes = [g.strip() for g in df[col].dropna() if g.strip()]
        if not genes:
            raise CMTAError(f"{path}: family {col!r} lists no genes")
        families[str(col)] = list(dict.fromkeys(genes))  # unique, order kept
    return families


def expand_families(
    families: dict[str, list[str]], columns, source: str = "genomic data"
) -> dict[str, list[str]]:
    """Family name -> feature names (``GENE_<modality>``) present in ``columns``.

    Each gene expands to every modality found for it; features are sorted by name, as
    MCAT/CMTA do. A family with no feature in the data is an error: a zero-width
    family cannot feed a genomic network.
    """
    present = set(map(str, columns))
    out: dict[str, list[str]] = {}
    for name, genes in families.items():
        feats = sorted(
            f"{g}_{m}" for g in genes for m in MODALITIES if f"{g}_{m}" in present
        )
        if not feats:
            raise CMTAError(
                f"family {name!r}: none of its {len(genes)} genes ({', '.join(genes[:5])}, ...) "
                f"has a feature in {source}; check that gene symbols match the data's "
                "(HUGO symbols) and that gene columns carry a _rnaseq/_cnv/_mut suffix "
                "(or declare unsuffixed columns with --unsuffixed)"
            )
        out[name] = feats
    return out
