"""The QC picture of a tiled slide: thumbnail, tissue contours, holes and the patch grid,
as a PNG (up to ``qc_max_px``), a small JPEG for reports that embed every slide's, and a
record of the size it was drawn at (slides/pictures.py draws it again at another)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..fileio import atomic_output, write_text_atomic

TISSUE = (0, 200, 0)  # RGB
#: Longest side of the JPEG thumbnail of the QC picture (tens of kB: the Snakemake report
#: embeds one per slide, where the PNG's 0.4-1.1 MB each would make hundreds of MB).
THUMB_PX = 480
HOLE = (0, 90, 255)
PATCH = (230, 30, 30)


def draw_qc(
    thumb: np.ndarray,
    thumb_downsample: float,
    contours: list,
    holes: list,
    contour_scale: float,
    coords: np.ndarray,
    patch_level0: int,
    caption: str,
) -> np.ndarray:
    """RGB picture: ``thumb`` (at ``thumb_downsample`` of level 0) with contours drawn
    (given at ``contour_scale`` thumb pixels per mask pixel) and patch outlines."""
    img = np.ascontiguousarray(thumb.copy())
    lw = max(1, round(max(img.shape[:2]) / 800))

    def scaled(cs):
        return [np.round(c.astype(np.float64) * contour_scale).astype(np.int32) for c in cs]

    side = patch_level0 / thumb_downsample
    if len(coords):
        tl = np.round(coords / thumb_downsample).astype(np.int32)
        br = np.round((coords + patch_level0) / thumb_downsample).astype(np.int32) - 1
        overlay = img.copy()
        for (x0, y0), (x1, y1) in zip(tl, br):  # drawing only; the grid itself is vectorised
            cv2.rectangle(overlay, (int(x0), int(y0)), (int(x1), int(y1)), PATCH, 1 if side < 12 else lw)
        img = cv2.addWeighted(overlay, 0.6, img, 0.4, 0)
    cv2.drawContours(img, scaled(contours), -1, TISSUE, lw + 1)
    cv2.drawContours(img, scaled([h for hs in holes for h in hs]), -1, HOLE, lw + 1)
    bar = np.full((max(24, 18 * lw), img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, caption, (4, bar.shape[0] - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * lw, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


def write_thumbnail(path: str | os.PathLike, rgb: np.ndarray, max_px: int = THUMB_PX) -> None:
    """``rgb`` shrunk to ``max_px`` on its longest side, as a JPEG (quality 85)."""
    shrink = min(1.0, max_px / max(rgb.shape[:2]))
    if shrink < 1.0:
        size = (max(1, round(rgb.shape[1] * shrink)), max(1, round(rgb.shape[0] * shrink)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]):
            raise OSError(f"could not write {path}")


def picture_paths(outdir: str | os.PathLike, slide_id: str) -> tuple[Path, Path, Path]:
    """The picture (PNG), its small JPEG for the report, and its record (JSON)."""
    base = Path(outdir) / slide_id
    return Path(f"{base}.qc.png"), Path(f"{base}.qc.jpg"), Path(f"{base}.qc.json")


def write_picture(outdir, slide_id, seg_rgb, seg_ds, tissue, coords, patch0, caption, qc_max_px) -> Path:
    """Draw the QC picture (the segmentation image shrunk to ``qc_max_px`` if larger) and
    write it, its JPEG and its record; return the PNG's path."""
    shrink = min(1.0, qc_max_px / max(seg_rgb.shape[:2]))
    thumb, thumb_ds = seg_rgb, seg_ds
    if shrink < 1.0:
        size = (max(1, round(seg_rgb.shape[1] * shrink)), max(1, round(seg_rgb.shape[0] * shrink)))
        thumb = cv2.resize(seg_rgb, size, interpolation=cv2.INTER_AREA)
        thumb_ds = seg_ds / shrink
    qc = draw_qc(thumb, thumb_ds, tissue.contours, tissue.holes, seg_ds / thumb_ds, coords, patch0, caption)
    png, jpg, record = picture_paths(outdir, slide_id)
    write_png(png, qc)
    write_thumbnail(jpg, qc)
    write_text_atomic(record, json.dumps({"qc_max_px": int(qc_max_px), "source_px": int(max(seg_rgb.shape[:2]))}) + "\n")
    return png
