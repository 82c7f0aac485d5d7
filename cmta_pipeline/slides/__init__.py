"""The slides stage: which slides belong to which patient, opening them, tissue
segmentation, the physical patch grid and its QC picture (``cmta slides``, ``cmta tile``,
``cmta tile-summary``; rule file ``workflow/rules/slides.smk``; docs/slides.md).

Rooms: :mod:`.table` (the slide table from a sheet, a folder or a GDC download), :mod:`.sheet`
(sheets and folders), :mod:`.gdc` (a GDC download with its sample sheet or manifest), :mod:`.wsi` (opening a slide, pixel size, levels),
:mod:`.segmentation` (tissue mask), :mod:`.patching` (patch grid and coords file),
:mod:`.qc` (QC picture), :mod:`.tiling` (one slide end to end), :mod:`.synthetic`
(synthetic slides of known geometry). Importing this package loads only the sheet
(no OpenCV or OpenSlide): Snakemake reads the sheet when it plans the jobs.
"""

from .sheet import case_id_from_barcode, discover_slides, read_sheet, slide_id_from_path
from .table import load_slide_table

__all__ = ["case_id_from_barcode", "discover_slides", "load_slide_table", "read_sheet", "slide_id_from_path"]
