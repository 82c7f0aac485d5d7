"""Reading the tables that genomic inputs come in: one-line errors naming the file, the
``#`` header lines of cBioPortal, MAF and GDC files, the cells that mean "no value", and
numeric blocks whose bad cells are named by row and column. Shared by every reader of
this package."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError

#: Cells that mean "no value" in cBioPortal and GDC downloads.
NA_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "'--", "--", "[Not Available]",
             "[Not Applicable]", "[Unknown]", "[Not Evaluated]", "[Discrepancy]",
             "[Completed]", "[Not Reported]"]


def examples(items, n: int = 8) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def open_text(path: Path):
    return gzip.open(path, "rt", errors="replace") if path.name.endswith(".gz") else open(path, errors="replace")


def leading_comment_lines(path: Path) -> int:
    """Number of leading lines starting with ``#`` (cBioPortal's attribute header rows,
    a MAF's ``#version``, a GDC file's ``# gene-model``). Only leading lines: a ``#``
    inside a data cell is data."""
    n = 0
    with open_text(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            n += 1
    return n


def read_table(path: Path, what: str, default_sep: str = "\t", **kw) -> pd.DataFrame:
    """A table with one-line errors: ``default_sep`` unless the name says .csv or
    .tsv/.txt/.maf; leading ``#`` lines are skipped unless ``skip_comments=False``."""
    path = Path(path)
    if not path.is_file():
        raise CMTAError(f"{what} file not found: {path}")
    name = path.name.lower().removesuffix(".gz")
    sep = default_sep
    if name.endswith(".csv"):
        sep = ","
    elif name.endswith((".tsv", ".txt", ".maf")):
        sep = "\t"
    if kw.pop("skip_comments", True):
        kw.setdefault("skiprows", leading_comment_lines(path))
    try:
        return pd.read_csv(path, sep=sep, low_memory=False, **kw)
    except Exception as exc:
        raise CMTAError(f"{path}: not a readable {what} table ({exc})") from exc


def check_unique_header(path: Path, columns, what: str) -> None:
    """Pandas renames a repeated header to ``X.1``; a repeated sample is an error."""
    seen = set()
    for c in columns:
        if c in seen:
            raise CMTAError(f"{path}: column {c!r} appears twice in the header (duplicate {what})")
        seen.add(c)


def read_header(path: Path, sep: str = "\t") -> list[str]:
    skip = leading_comment_lines(path)
    with open_text(path) as fh:
        for i, line in enumerate(fh):
            if i == skip:
                return [c.strip().strip('"') for c in line.rstrip("\r\n").split(sep)]
    return []


def numeric_block(df: pd.DataFrame, source: str, row_names) -> pd.DataFrame:
    """``df`` as float64; a non-numeric cell is an error naming its row and column."""
    out = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            out[col] = s.astype(float)
            continue
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna() & s.notna() & (s.astype(str).str.strip() != "")
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise CMTAError(
                f"{source}: {row_names[pos]}, column {col!r}: value {s.iloc[pos]!r} is not a number"
            )
        out[col] = num.astype(float)
    return pd.DataFrame(out, index=df.index)
