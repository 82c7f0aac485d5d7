"""The slide table of a GDC download: slide files as ``gdc-client`` lays them out
(``<File ID>/<File Name>``, no renaming), with each file's patient from the cart's sample
sheet or manifest.

* Sample sheet (``gdc_sample_sheet.<date>.tsv``; both layouts, see
  :mod:`cmta_pipeline.genomics.gdc_sheet`): the patient is the ``Case ID``, for TCGA and
  every other project (CPTAC ``C3L-00081``, TARGET ``TARGET-20-PARLXL``, ...). Slides of a
  sample that is not a tumour (a normal-tissue slide, ``Sample Type`` Solid Tissue Normal
  or ``Tissue Type`` Normal) are left out, and said so.
* Manifest (``gdc_manifest.<date>.txt``: id, filename, md5, size, state): it names no
  case, so the patient comes from the file name's TCGA or TARGET barcode (the GDC names
  those slides ``TCGA-XX-XXXX-01Z-00-DX1.<uuid>.svs``); for other projects use the sample
  sheet. Each file's size is checked against the manifest's (an interrupted download is an
  error naming the file).

Files the sheet or manifest lists but the folder lacks are reported, not guessed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from ..genomics.gdc_sheet import read_sample_sheet
from ..genomics.samples import is_tumour
from ..ids import check_id
from .sheet import SLIDE_EXTENSIONS, case_id_from_barcode, check_table, slide_id_from_path

MANIFEST_COLUMNS = ("id", "filename", "md5", "size")


def _files_under(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for p in folder.rglob("*"):
        if p.is_file() and p.name.lower().endswith(SLIDE_EXTENSIONS) and not p.name.startswith("."):
            found.setdefault(p.name, []).append(p)
    return found


def _locate(name: str, file_id: str, found: dict[str, list[Path]]) -> Path | None:
    """The downloaded file: ``<File ID>/<name>`` when there are several of that name."""
    paths = found.get(name, [])
    return next((p for p in paths if p.parent.name == file_id), paths[0] if paths else None)


def read_gdc_listing(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """(file_id, file_name, case_id (None from a manifest), tumour (bool), project, size
    (None from a sample sheet)) of every slide file listed; and "sample sheet" or
    "manifest"."""
    path = Path(path)
    if not path.is_file():
        raise CMTAError(f"GDC sample sheet or manifest not found: {path}")
    head = path.read_text(errors="replace").split("\n", 1)[0].rstrip("\r").split("\t")
    if all(c in head for c in MANIFEST_COLUMNS):
        df = pd.read_csv(path, sep="\t", dtype=str)
        out = pd.DataFrame({"file_id": df["id"], "file_name": df["filename"], "case_id": None, "tumour": True,
                            "project": None, "size": pd.to_numeric(df["size"], errors="coerce")})
        kind = "manifest"
    else:
        sheet = read_sample_sheet(path)
        out = pd.DataFrame({
            "file_id": sheet.get("File ID", sheet["file_name"]), "file_name": sheet["file_name"],
            "case_id": sheet["case_id"], "tumour": [is_tumour(c) for c in sheet["type_code"]],
            "project": sheet.get("Project ID"), "size": None,
        })
        kind = "sample sheet"
    slides = out["file_name"].str.lower().str.endswith(SLIDE_EXTENSIONS)
    if not slides.any():
        raise CMTAError(f"{path}: lists no slide files ({', '.join(SLIDE_EXTENSIONS)})")
    return out[slides].reset_index(drop=True), kind


def gdc_slide_table(folder: str | os.PathLike, listing: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """The slide table (slide_id, case_id, path, mpp, stain) of the slides ``listing`` (a
    GDC sample sheet or manifest) names that are under ``folder``; and notes on what was
    left out (files not downloaded, non-tumour slides)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CMTAError(f"slide folder not found: {folder}")
    listed, kind = read_gdc_listing(listing)
    found = _files_under(folder)
    rows, absent, normal = [], [], []
    for r in listed.itertuples():
        path = _locate(r.file_name, str(r.file_id), found)
        if path is None:
            absent.append(r.file_name)
            continue
        if r.size is not None and pd.notna(r.size) and path.stat().st_size != int(r.size):
            raise CMTAError(
                f"{path}: {path.stat().st_size:,} bytes where the manifest {listing} says {int(r.size):,}: "
                "the download is incomplete; run gdc-client download again"
            )
        if not r.tumour:
            normal.append(r.file_name)
            continue
        case = r.case_id or case_id_from_barcode(r.file_name)
        if not case:
            raise CMTAError(
                f"{listing}: {r.file_name}: a manifest names no case and the file name is not a TCGA or "
                "TARGET barcode; give the cart's sample sheet (gdc_sample_sheet.<date>.tsv) instead"
            )
        where = f"{listing}, row {r.Index + 2} ({r.file_name!r})"
        rows.append({"slide_id": check_id(slide_id_from_path(r.file_name), "slide id (the file name)", where),
                     "case_id": check_id(case, "case id", where), "path": str(path)})
    notes = []
    if absent:
        notes.append(f"{len(absent)} slide(s) in the {kind} but not under {folder}: {', '.join(absent[:5])}"
                     + (" ..." if len(absent) > 5 else ""))
    if normal:
        notes.append(f"{len(normal)} slide(s) of non-tumour samples left out: {', '.join(normal[:5])}"
                     + (" ..." if len(normal) > 5 else ""))
    if not rows:
        raise CMTAError(f"{listing}: none of its slide files is under {folder}" + (f" ({notes[0]})" if notes else ""))
    return check_table(pd.DataFrame(rows), str(listing)), notes
