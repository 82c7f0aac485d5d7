"""The QC pictures of tiled slides and the settings that change only them.

``tiling.qc_max_px`` (:data:`PICTURE_KEYS`) sizes the QC picture and nothing else: it is
left out of the tiling's recorded settings (changing it retiles nothing) and the workflow's
``qc_pictures`` rule, one local job per tiling, runs ``cmta tile-qc``: every picture drawn
at another size is drawn again from the slide and its coords (segmentation redone with the
recorded settings), the others are kept. ``<slide_id>.qc.json`` beside the picture records
the size it was drawn at (``qc_max_px``) and the longest side of its source image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import CMTAError
from ..fileio import atomic_output
from .qc import picture_paths, write_picture

#: tiling settings that change only the QC picture, never the tiles
PICTURE_KEYS = ("qc_max_px",)


def _same_picture(record: Path, qc_max_px: int) -> bool:
    """Whether the picture whose record is ``record`` is the one ``qc_max_px`` draws (the
    same size, or a size both at least its source image's)."""
    try:
        data = json.loads(record.read_text())
        drawn, source = int(data["qc_max_px"]), int(data["source_px"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # drawn again
    return min(drawn, source) == min(qc_max_px, source)


def redraw_picture(status: dict, qc_max_px: int) -> str:
    """Draw one tiled slide's picture again if it was drawn at another size; 'kept',
    'redrawn' or 'no picture' (a failed slide)."""
    import h5py

    from .segmentation import TilingParams
    from .tiling import find_patches
    from .wsi import open_slide, slide_geometry

    if status.get("status") != "ok":
        return "no picture"
    coords_file = Path(status["coords_path"])
    slide_id = str(status["slide_id"])
    record = picture_paths(coords_file.parent, slide_id)[2]
    if record.is_file() and _same_picture(record, qc_max_px):
        return "kept"
    try:
        with h5py.File(coords_file, "r") as f:
            coords = np.asarray(f["coords"][:])
            attrs = dict(f["coords"].attrs)
    except OSError as exc:
        raise CMTAError(f"{coords_file}: cannot read the coords ({exc})") from None
    segmentation = json.loads(attrs["segmentation"])
    # a picture of an earlier version (no record): drawn at its tiling's qc_max_px
    if not record.is_file() and int(segmentation.get("qc_max_px", TilingParams.qc_max_px)) == qc_max_px:
        return "kept"
    params = TilingParams.from_mapping({**segmentation, "qc_max_px": qc_max_px}, f"{coords_file}: segmentation")
    path = Path(str(attrs.get("slide_path", status.get("slide_path"))))
    if not path.is_file():
        raise CMTAError(f"{path}: slide {slide_id} not found to draw its QC picture again "
                        f"(tiled from there; move it back, or rerun with --forcerun tile)")
    slide = open_slide(path)
    try:
        geom = slide_geometry(slide, path, float(attrs["mpp"]))
        seg_rgb, seg_ds, tissue, _ = find_patches(slide, path, geom, params, int(attrs["patch_size_level0"]))
    finally:
        slide.close()
    caption = f"{slide_id}: {len(coords)} patches of {params.patch_um:g} um, read level {int(attrs['read_level'])}"
    write_picture(coords_file.parent, slide_id, seg_rgb, seg_ds, tissue, coords,
                  int(attrs["patch_size_level0"]), caption, qc_max_px)
    return "redrawn"


def redraw_pictures(status_files, qc_max_px: int, output: str | os.PathLike) -> dict:
    """Every tiled slide's picture at ``qc_max_px`` (drawn again where needed); the table
    ``output`` (slide_id, picture, qc_max_px, action) says what was done. The counts."""
    if isinstance(qc_max_px, bool) or not isinstance(qc_max_px, int) or qc_max_px < 256:
        raise CMTAError(f"tiling.qc_max_px: an integer of at least 256, got {qc_max_px!r}")
    rows, counts = [], {}
    for status_file in status_files:
        try:
            status = json.loads(Path(status_file).read_text())
        except (OSError, ValueError) as exc:
            raise CMTAError(f"{status_file}: not a tiling status file ({exc})") from None
        action = redraw_picture(status, qc_max_px)
        counts[action] = counts.get(action, 0) + 1
        picture = str(Path(status["coords_path"]).with_name(f"{status['slide_id']}.qc.png")) if action != "no picture" else ""
        rows.append(f"{status['slide_id']}\t{picture}\t{qc_max_px}\t{action}")
    with atomic_output(output) as tmp:
        Path(tmp).write_text("slide_id\tpicture\tqc_max_px\taction\n" + "".join(r + "\n" for r in rows))
    return counts
