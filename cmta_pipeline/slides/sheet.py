"""The slide table: which slides belong to which patient, read from a sheet or a folder.

A sheet is a TSV with columns ``slide_id``, ``case_id``, ``path`` and the optional
``mpp`` (micrometres per pixel, overrides the slide's metadata) and ``stain``
(``brightfield`` or ``fluorescence``). A folder is scanned for slide files and the
case id is taken from the TCGA (or TARGET) barcode at the start of each file name, as
slides downloaded from the GDC are named (``TCGA-2F-A9KO-01Z-00-DX1.<uuid>.svs``); a GDC
download of any project is read with its sample sheet or manifest (:mod:`.gdc`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CMTAError
from ..ids import check_id, check_ids

if TYPE_CHECKING:  # pandas is imported where tables are built: `cmta tile` need not pay for it
    import pandas as pd

#: File name endings OpenSlide 4 opens (a DICOM series is opened through any of its files).
SLIDE_EXTENSIONS = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs",
    ".bif", ".svslide", ".dcm",
)
SHEET_COLUMNS = ("slide_id", "case_id", "path")
OPTIONAL_COLUMNS = ("mpp", "stain")

_CASE_BARCODE = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}|TARGET-\d{2}-[A-Z0-9]{6})(?=[-.]|$)", re.IGNORECASE)


def slide_id_from_path(path: str | os.PathLike) -> str:
    """The file name without its slide extension (``a/b/X.svs`` -> ``X``)."""
    name = Path(path).name
    for ext in sorted(SLIDE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def case_id_from_barcode(name: str) -> str | None:
    """``TCGA-XX-XXXX`` (or ``TARGET-NN-XXXXXX``) from a TCGA (TARGET) slide or sample
    barcode, or None if it is not one."""
    m = _CASE_BARCODE.match(Path(name).name)
    return m.group(1).upper() if m else None


def discover_slides(folder: str | os.PathLike, recursive: bool = False) -> pd.DataFrame:
    """Slide table of every slide file in ``folder`` (case ids from TCGA barcodes)."""
    import pandas as pd

    root = Path(folder)
    if not root.is_dir():
        raise CMTAError(f"slide folder not found: {root}")
    files = root.rglob("*") if recursive else root.glob("*")
    rows = []
    for f in sorted(files):
        if f.is_file() and f.name.lower().endswith(SLIDE_EXTENSIONS) and not f.name.startswith("."):
            sid = check_id(slide_id_from_path(f), "slide id (the file name)", str(f))
            case = case_id_from_barcode(f.name)
            if case is None:
                raise CMTAError(
                    f"{f}: cannot derive a case id from the file name (expected a TCGA "
                    "barcode such as TCGA-2F-A9KO-...); list the slides in a sheet with a "
                    "case_id column instead"
                )
            rows.append({"slide_id": sid, "case_id": case, "path": str(f)})
    if not rows:
        raise CMTAError(f"no slide files ({', '.join(SLIDE_EXTENSIONS)}) in {root}")
    return check_table(pd.DataFrame(rows), str(root))


def read_sheet(sheet: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read and check a slide sheet; relative paths are taken from ``base_dir`` (default: cwd)."""
    import pandas as pd

    sheet = Path(sheet)
    if not sheet.is_file():
        raise CMTAError(f"slide sheet not found: {sheet}")
    try:
        df = pd.read_csv(sheet, sep="\t", dtype=str, comment="#").dropna(how="all")
    except Exception as exc:  # pandas raises many types for a malformed table
        raise CMTAError(f"{sheet}: not a readable TSV table ({exc})") from exc
    missing = [c for c in SHEET_COLUMNS if c not in df.columns]
    if missing:
        raise CMTAError(
            f"{sheet}: missing column(s) {', '.join(missing)}; a slide sheet needs "
            f"{', '.join(SHEET_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})"
        )
    unknown = [c for c in df.columns if c not in SHEET_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise CMTAError(f"{sheet}: unknown column(s) {', '.join(unknown)}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    df["path"] = [p if Path(p).is_absolute() else os.path.abspath(base / p) for p in df["path"]]
    return check_table(df, str(sheet))


def check_table(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """``df`` (slide_id, case_id, path[, mpp][, stain]) checked: no empty cells, unique slide
    ids that can be file names, positive mpp, a known stain; the optional columns filled."""
    import pandas as pd

    df = df.copy()
    for col in SHEET_COLUMNS:
        blank = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if blank.any():
            row = int(blank.to_numpy().nonzero()[0][0]) + 2  # header is line 1
            raise CMTAError(f"{source}: empty {col} on line {row}")
    dup = df["slide_id"].duplicated()
    if dup.any():
        raise CMTAError(f"{source}: slide_id {df['slide_id'][dup].iloc[0]!r} appears twice")
    for col in ("slide_id", "case_id"):  # the one identifier rule (cmta_pipeline/ids.py)
        check_ids(df[col], col, source, lines=[int(i) + 2 for i in df.index])
    if "mpp" in df.columns:
        mpp = pd.to_numeric(df["mpp"], errors="coerce")
        wrong = df["mpp"].notna() & ~(mpp > 0)
        if wrong.any():
            sid = df["slide_id"][wrong].iloc[0]
            raise CMTAError(f"{source}: mpp of slide {sid!r} must be a positive number, got {df['mpp'][wrong].iloc[0]!r}")
        df["mpp"] = mpp
    else:
        df["mpp"] = float("nan")
    if "stain" in df.columns:
        stain = df["stain"].fillna("brightfield").str.strip().str.lower()
        wrong = ~stain.isin(["brightfield", "fluorescence"])
        if wrong.any():
            raise CMTAError(
                f"{source}: stain of slide {df['slide_id'][wrong].iloc[0]!r} must be "
                f"brightfield or fluorescence, got {df['stain'][wrong].iloc[0]!r}"
            )
        df["stain"] = stain
    else:
        df["stain"] = "brightfield"
    return df[list(SHEET_COLUMNS + OPTIONAL_COLUMNS)].reset_index(drop=True)
