"""Opening whole-slide images, their pixel size, pyramid levels and region reads.

Everything format-specific is OpenSlide's (``openslide-python`` with the ``openslide-bin``
wheel, OpenSlide 4: SVS, NDPI, DICOM, generic tiled TIFF, MRXS, ...). This module turns its
failures into one-line :class:`CMTAError` messages that name the slide.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CMTAError

log = logging.getLogger(__name__)

# Units of TIFF ResolutionUnit, in micrometres.
_TIFF_UNIT_UM = {"centimeter": 1e4, "inch": 25_400.0}


def open_slide(path: str | os.PathLike):
    """Open ``path`` with OpenSlide, or raise a one-line CMTAError that says why not."""
    import openslide

    path = Path(path)
    if not path.exists():
        raise CMTAError(f"{path}: slide file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise CMTAError(f"{path}: slide file is empty")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise CMTAError(f"{path}: not a slide format OpenSlide can read") from None
    except openslide.OpenSlideError as exc:
        raise CMTAError(f"{path}: corrupt or unreadable slide ({_one_line(exc)})") from None
    except Exception as exc:  # e.g. a permissions error surfaced by the C library
        raise CMTAError(f"{path}: cannot open slide ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class SlideGeometry:
    """Pixel size and pyramid of a slide. ``mpp`` is micrometres per level-0 pixel."""

    mpp: float
    mpp_source: str
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.level_downsamples[level]


def read_mpp(slide, path: str | os.PathLike, override: float | None = None) -> tuple[float, str]:
    """The slide's micrometres per pixel and where it came from.

    Order: ``override`` (user), ``openslide.mpp-x/y`` (vendor metadata), then the TIFF
    resolution tags. Without any of these, a CMTAError tells the user how to supply it:
    the pixel size is never guessed from the objective power.
    """
    if override is not None and not (isinstance(override, float) and math.isnan(override)):
        if not override > 0:
            raise CMTAError(f"{path}: mpp override must be positive, got {override}")
        return float(override), "override"
    props = slide.properties
    x, y = props.get("openslide.mpp-x"), props.get("openslide.mpp-y")
    if x and y:
        mx, my = float(x), float(y)
        if mx > 0 and my > 0:
            if abs(mx - my) / max(mx, my) > 0.01:
                log.warning("%s: non-square pixels (mpp-x %.4f, mpp-y %.4f); using their mean", path, mx, my)
            return (mx + my) / 2, "openslide.mpp"
    unit = props.get("tiff.ResolutionUnit", "").lower()
    xres, yres = props.get("tiff.XResolution"), props.get("tiff.YResolution")
    if unit in _TIFF_UNIT_UM and xres and yres and float(xres) > 0 and float(yres) > 0:
        mx = _TIFF_UNIT_UM[unit] / float(xres)
        my = _TIFF_UNIT_UM[unit] / float(yres)
        return (mx + my) / 2, "tiff.resolution"
    raise CMTAError(
        f"{path}: no pixel size (mpp) in the slide's metadata; give it with --mpp "
        "or in the mpp column of the slide sheet"
    )


def slide_geometry(slide, path: str | os.PathLike, mpp: float | None = None) -> SlideGeometry:
    mpp_value, source = read_mpp(slide, path, mpp)
    return SlideGeometry(
        mpp=mpp_value,
        mpp_source=source,
        dimensions=tuple(slide.dimensions),
        level_dimensions=tuple(tuple(d) for d in slide.level_dimensions),
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
    )


def coarsest_level_at_most(geom: SlideGeometry, max_mpp: float, tolerance: float = 0.02) -> int:
    """The coarsest pyramid level whose pixel size is at most ``max_mpp`` (within tolerance).

    Reading there and resizing down to the encoder input loses nothing the encoder would
    see, and reads far fewer pixels than level 0. Level 0 when no level is fine enough
    (the caller decides whether that means upsampling is needed).
    """
    best = 0
    for level in range(len(geom.level_downsamples)):
        if geom.level_mpp(level) <= max_mpp * (1 + tolerance):
            if geom.level_downsamples[level] >= geom.level_downsamples[best]:
                best = level
    return best


def read_rgb(slide, location: tuple[int, int], level: int, size: tuple[int, int], path="slide") -> np.ndarray:
    """Read a region as an H x W x 3 uint8 array; transparent (unscanned) pixels become white."""
    try:
        rgba = np.asarray(slide.read_region(location, level, size))
    except Exception as exc:
        raise CMTAError(
            f"{path}: failed to read region at {location} level {level} ({_one_line(exc)})"
        ) from None
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def read_level_scaled(slide, geom: SlideGeometry, level: int, out_mpp: float, path="slide", chunk: int = 4096) -> tuple[np.ndarray, float]:
    """The whole of pyramid ``level`` as RGB, shrunk to ``out_mpp`` if that is coarser.

    Returns the image and its downsample relative to level 0. The level is read in chunks
    that are resized one at a time, so memory stays bounded whatever the level's size.
    """
    import cv2

    level_ds = geom.level_downsamples[level]
    lw, lh = geom.level_dimensions[level]
    scale = min(1.0, geom.level_mpp(level) / out_mpp)  # output px per level px
    if scale >= 0.999:
        return read_rgb(slide, (0, 0), level, (lw, lh), path), level_ds
    out_w, out_h = max(1, round(lw * scale)), max(1, round(lh * scale))
    out = np.empty((out_h, out_w, 3), np.uint8)
    for y0 in range(0, lh, chunk):
        y1 = min(lh, y0 + chunk)
        oy0, oy1 = round(y0 * scale), round(y1 * scale)
        for x0 in range(0, lw, chunk):
            x1 = min(lw, x0 + chunk)
            ox0, ox1 = round(x0 * scale), round(x1 * scale)
            if oy1 <= oy0 or ox1 <= ox0:
                continue
            region = read_rgb(slide, (round(x0 * level_ds), round(y0 * level_ds)), level, (x1 - x0, y1 - y0), path)
            out[oy0:oy1, ox0:ox1] = cv2.resize(region, (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_AREA)
    return out, geom.dimensions[0] / out_w


def overview_image(
    slide, geom: SlideGeometry, preferred_mpp: float = 8.0, min_px: int = 1024, path="slide"
) -> tuple[np.ndarray, float]:
    """A low-resolution image of the whole slide for segmentation and QC.

    Its pixel size is ``preferred_mpp`` (about 32x below 40x), refined for small specimens
    so that the long side has at least ``min_px`` pixels. It is read from the coarsest
    pyramid level at most 2x coarser than that (so a slide with levels at 4 and 16 um/px
    is segmented from the 16 um/px level rather than by shrinking the 4 um/px one, as CLAM
    segments at 64x) and shrunk when the level is finer. Returns (image, downsample).
    """
    long_um = max(geom.dimensions) * geom.mpp
    want = max(geom.mpp, min(preferred_mpp, long_um / min_px))
    level = 0
    for i in range(len(geom.level_downsamples)):
        if geom.level_mpp(i) <= 2 * want and geom.level_downsamples[i] >= geom.level_downsamples[level]:
            level = i
    return read_level_scaled(slide, geom, level, want, path)
