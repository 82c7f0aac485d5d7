"""The slide table from its source (:func:`load_slide_table`): a sheet, a folder of slides
named by barcode (:mod:`.sheet`), or a GDC download with its sample sheet or manifest
(:mod:`.gdc`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CMTAError
from .sheet import discover_slides, read_sheet

if TYPE_CHECKING:  # pandas is imported where tables are built: `cmta tile` need not pay for it
    import pandas as pd


def load_slide_table(
    sheet: str | None = None,
    folder: str | None = None,
    recursive: bool = False,
    base_dir: str | os.PathLike | None = None,
    gdc_sample_sheet: str | None = None,
    gdc_manifest: str | None = None,
) -> pd.DataFrame:
    """The slide table from a sheet or from a folder (exactly one is needed). A folder
    that is a GDC download is read with the cart's ``gdc_sample_sheet`` or
    ``gdc_manifest``, which say whose each slide is (:func:`.gdc.gdc_slide_table`); any
    other folder by the TCGA/TARGET barcodes of its file names."""
    if sheet and folder:
        raise CMTAError(
            f"config slides: both sheet ({sheet}) and folder ({folder}) are set; "
            "set the one you do not use to null"
        )
    if not sheet and not folder:
        raise CMTAError("config slides: give a sheet (TSV of slide_id, case_id, path) or a folder of slides")
    listing = gdc_sample_sheet or gdc_manifest
    if gdc_sample_sheet and gdc_manifest:
        raise CMTAError("config slides: give the GDC sample sheet or the manifest, not both (the sheet says more)")
    if listing and not folder:
        raise CMTAError("config slides: a GDC sample sheet or manifest goes with slides.folder (the download folder)")
    if sheet:
        return read_sheet(sheet, base_dir)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    folder_path = Path(os.path.abspath(base / folder))
    if listing:
        from .gdc import gdc_slide_table  # pandas and the GDC readers only when used

        return gdc_slide_table(folder_path, base / listing)[0]
    return discover_slides(folder_path, recursive)
