"""Reading the tables that genomic inputs come in: one-line errors naming the file, the
``#`` header lines of cBioPortal, MAF and GDC files, the cells that mean "no value", and
numeric blocks whose bad cells are named by row and column. Shared by every reader of
this package."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError

#: Largest absolute value accepted in a gene column: far above any count, TPM, FPKM,
#: copy number or mutation count (raw read counts stay below 1e9); a larger value is a
#: corrupt cell, not a measurement.
GENE_VALUE_LIMIT = 1e12


#: Longest follow-up accepted, in months (100 years): a larger one is a unit error
#: (days or years written as months) or a corrupt cell.
MAX_SURVIVAL_MONTHS = 1200.0


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
    skip = leading_comment_lines(path) if kw.pop("skip_comments", True) else 0
    kw.setdefault("skiprows", skip)
    if kw.pop("check_complete", True):
        check_last_row(path, what, sep, skip)
    try:
        return pd.read_csv(path, sep=sep, low_memory=False, **kw)
    except Exception as exc:
        raise CMTAError(f"{path}: not a readable {what} table ({exc})") from exc


def last_line(path: Path) -> tuple[str, bool]:
    """(the file's last line that is not empty, whether the file ends with a newline).
    Read from the end of the file (a gzip file is read through)."""
    if path.name.endswith(".gz"):
        tail = b""
        try:
            with gzip.open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    tail = (tail + block)[-(1 << 16):]
        except (OSError, EOFError) as exc:
            raise CMTAError(f"{path}: the gzip file is cut off or damaged ({exc}); download it again") from None
    else:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            step, tail = 1 << 16, b""
            while True:
                start = max(0, size - step)
                fh.seek(start)
                tail = fh.read(size - start)
                if start == 0 or tail.rstrip(b"\r\n").count(b"\n") >= 1:
                    break
                step *= 4
    ends = tail.endswith(b"\n")
    lines = [ln for ln in tail.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    return (lines[-1] if lines else ""), ends


def count_fields(line: str, sep: str) -> int:
    """Fields of one line, quoted cells as pandas reads them."""
    return len(next(csv.reader([line], delimiter=sep)))


def check_last_row(path: Path, what: str, sep: str, skip: int) -> None:
    """A table whose last row has fewer or more fields than its header was cut off (an
    interrupted download) or is ragged: an error naming the file. An empty file too."""
    if path.stat().st_size == 0:
        raise CMTAError(f"{path}: the {what} file is empty (0 bytes): an interrupted download? download it again")
    header = None
    with open_text(path) as fh:
        for i, line in enumerate(fh):
            if i == skip:
                header = line.rstrip("\r\n")
                break
    last, _ = last_line(path)
    if header is None or last == header:
        return  # a header alone: the readers say what is missing
    n_head, n_last = count_fields(header, sep), count_fields(last, sep)
    if n_last != n_head:
        raise CMTAError(
            f"{path}: the last row has {n_last} fields where the header has {n_head} "
            f"(it starts {last[:40]!r}): the file is cut off (an interrupted download?) or "
            "ragged; download it again"
        )


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


def first_bad_cell(values, limit: float | None = None, allow_nan: bool = True) -> tuple | None:
    """Index (a tuple) of the first cell of ``values`` that is infinite, beyond +-``limit``
    or, unless ``allow_nan``, NaN; None when every cell is fine."""
    arr = np.asarray(values, dtype=float)
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if limit is not None:
        with np.errstate(invalid="ignore"):
            bad |= np.abs(arr) > limit
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(bad)[0]), arr.shape))


def bad_value_text(value: float, limit: float | None) -> str:
    """Why ``value`` is refused, for the error line."""
    if np.isnan(value):
        return "is NaN (missing where a number is required)"
    if np.isinf(value):
        return f"is {value:g} (not a finite number)"
    return f"is {value:g}, beyond +-{limit:g} (an absurd value: a corrupt cell or a unit error)"


def check_finite(df: pd.DataFrame, source: str, row_names=None, limit: float | None = GENE_VALUE_LIMIT,
                 allow_nan: bool = True) -> None:
    """Every cell of the numeric table ``df`` finite and within +-``limit`` (NaN is a
    missing value, allowed unless ``allow_nan=False``); else an error naming the file
    (``source``), the row (``row_names``, default the index) and the column. The one
    check of numbers read from outside: gene tables, survival, feature matrices."""
    at = first_bad_cell(df.to_numpy(dtype=float), limit, allow_nan)
    if at is None:
        return
    r, c = at
    row = row_names[r] if row_names is not None else f"row {df.index[r]}"
    value = float(df.iat[r, c])
    raise CMTAError(f"{source}: {row}, column {df.columns[c]!r}: value {bad_value_text(value, limit)}")


def numeric_block(df: pd.DataFrame, source: str, row_names, limit: float | None = GENE_VALUE_LIMIT) -> pd.DataFrame:
    """``df`` as float64; a non-numeric cell, an infinite one or one beyond +-``limit``
    (:data:`GENE_VALUE_LIMIT`) is an error naming its row and column."""
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
    values = pd.DataFrame(out, index=df.index)
    check_finite(values, source, row_names, limit)
    return values
