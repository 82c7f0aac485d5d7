"""Patch coordinates in, pixel batches out: the coords file and the slide reader.

The coords file (CLAM layout, written by ``cmta tile`` or by CLAM itself) holds dataset
``coords`` (N x 2, level-0 top-left x, y) and attributes ``patch_level`` and ``patch_size``
(side at that level). ``cmta tile`` adds ``patch_size_level0``, ``level_dim``,
``encoder_input_px``, ``mpp`` and more; files without them (CLAM's) still work.

Reading is done a batch at a time by :class:`PatchBatches`, a map-style dataset whose items
are lists of patch indices. Each DataLoader worker opens the slide once, reads its batch,
resizes every patch to the encoder input and returns one uint8 (B, S, S, 3) array: four
times less to ship between processes than float tensors, and normalisation is done once
on the whole batch on the device.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CMTAError
from ..slides.patching import read_coords
from ..slides.wsi import open_slide as _open_slide
from .resize import pil_filter

log = logging.getLogger(__name__)

READ_AT = ("coords", "level0")


@dataclass
class PatchGrid:
    """What the coords file says, checked against the slide."""

    path: Path
    coords: np.ndarray  # (N, 2) int64, level-0 top-left x, y
    patch_level: int  # level the patches are read at (coords files: read level)
    patch_size: int  # side in pixels at patch_level
    patch_size_level0: int  # side in level-0 pixels
    encoder_input_px: int | None  # what the tiler planned, if it says
    attrs: dict


def load_patch_grid(coords_path: str | os.PathLike, slide) -> PatchGrid:
    """Read and check ``coords_path`` against the open OpenSlide ``slide``.

    Raises :class:`CMTAError` for a file that is missing, unreadable, empty, without the
    CLAM attributes, or made from another slide (level-0 dimensions disagree, or patches
    that lie outside the slide).
    """
    path = Path(coords_path)
    cf = read_coords(path)
    coords, attrs = cf.coords, cf.attrs

    for key in ("patch_level", "patch_size"):
        if key not in attrs:
            raise CMTAError(f"{path}: attribute '{key}' missing on 'coords' (CLAM layout needs "
                            f"patch_level and patch_size)")
    level = int(attrs.get("patch_level"))
    size = int(attrs.get("patch_size"))
    name = getattr(slide, "_cmta_path", "slide")
    if not 0 <= level < slide.level_count:
        raise CMTAError(f"{path}: patch_level {level} but {name} has {slide.level_count} levels; "
                        f"coords file from another slide?")
    if size <= 0:
        raise CMTAError(f"{path}: patch_size must be positive, got {size}")
    size0 = attrs.get("patch_size_level0")
    size0 = int(size0) if size0 is not None else int(round(size * slide.level_downsamples[level]))

    w, h = slide.dimensions
    dim = attrs.get("level_dim")
    if dim is not None:
        dim = tuple(int(v) for v in np.asarray(dim).ravel()[:2])
        if dim != (w, h):
            raise CMTAError(f"{path}: made for a slide of {dim[0]} x {dim[1]} px but {name} is "
                            f"{w} x {h}; coords file from another slide?")
    x, y = coords[:, 0], coords[:, 1]
    outside = (x >= w) | (y >= h) | (x + size0 <= 0) | (y + size0 <= 0)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise CMTAError(f"{path}: {int(outside.sum())} patches lie outside {name} ({w} x {h}), "
                        f"first: #{i} at ({x[i]}, {y[i]}); coords file from another slide?")
    enc = attrs.get("encoder_input_px")
    return PatchGrid(path, coords, level, size, size0, int(enc) if enc is not None else None,
                     attrs)


def open_slide(path: str | os.PathLike):
    """OpenSlide handle of ``path`` (errors as :func:`cmta_pipeline.slides.wsi.open_slide`),
    remembering its path for messages about the coords file."""
    s = _open_slide(path)
    s._cmta_path = str(path)
    return s


def resize_patch(region, size: int, clam_pixels: bool) -> np.ndarray:
    """PIL RGBA region (as OpenSlide returns it) -> (size, size, 3) uint8 RGB.

    Alpha is dropped as CLAM's ``.convert("RGB")`` does. Default: PIL's box filter (area
    averaging, anti-aliased) when shrinking, bilinear when growing. ``clam_pixels``: PIL
    bilinear, what torchvision's ``Resize`` does to CLAM's PIL images.

    PIL, not OpenCV, on purpose: OpenCV's thread pool deadlocks in a forked reader process
    when the parent used OpenCV before, and PIL is faster here anyway (box 512 -> 224 px:
    about 1.3 ms with the RGB conversion, OpenCV's area resize of the array about 3.7 ms).
    """
    rgb = region.convert("RGB")
    if rgb.size == (size, size):
        return np.asarray(rgb)
    return resize_array(np.asarray(rgb), size, pil_filter(rgb.size[0], size, clam_pixels))


def resize_array(pixels: np.ndarray, size: int, filter_name: str | None) -> np.ndarray:
    """uint8 (S, S, 3) -> (size, size, 3) with PIL's ``box`` or ``bilinear`` filter (None:
    unchanged); :func:`cmta_pipeline.features.resize.resize_batch` gives the same bytes."""
    from PIL import Image

    if filter_name is None:
        return pixels
    flt = Image.BILINEAR if filter_name == "bilinear" else Image.BOX
    return np.asarray(Image.fromarray(pixels).resize((size, size), flt))


class PatchBatches:
    """Map-style dataset of the ``openslide`` reader: item = list of patch indices -> dict
    of a uint8 batch.

    Returned dict: ``index`` (B,) int64, ``pixels`` (B, P, P, 3) uint8, ``ok`` (B,) bool and
    ``error`` (str: the first failure, "" if none). P is ``input_px``, or the patch as read
    (``size``) with ``resize=False``, when the encoder's device resizes it
    (:func:`cmta_pipeline.features.resize.resize_batch`, the same bytes). A patch that fails
    to decode is not raised inside the worker (the DataLoader would wrap it in an
    unreadable traceback): it comes back with ok=False and zero pixels, and the caller
    decides (stop or skip). After an error OpenSlide refuses every further read on that
    handle, so it is reopened.
    """

    reader = "openslide"

    def __init__(self, slide_path, grid: PatchGrid, input_px: int, read_at: str = "coords",
                 resize: bool = True):
        if read_at not in READ_AT:
            raise CMTAError(f"read_at must be one of {', '.join(READ_AT)}, got {read_at!r}")
        self.slide_path = str(slide_path)
        self.coords = grid.coords
        self.input_px = int(input_px)
        self.clam_pixels = read_at == "level0"
        if self.clam_pixels:
            self.level, self.size = 0, grid.patch_size_level0
        else:
            self.level, self.size = grid.patch_level, grid.patch_size
        self.resize = bool(resize)
        self.filter = pil_filter(self.size, self.input_px, self.clam_pixels)
        self._slide = None

    @property
    def out_px(self) -> int:
        """Side of the pixels an item holds: the encoder input, or the patch as read."""
        return self.input_px if self.resize else self.size

    def _open(self):
        import openslide

        if self._slide is None:
            self._slide = openslide.OpenSlide(self.slide_path)
        return self._slide

    def read_openslide(self, i: int) -> np.ndarray:
        """Patch ``i`` through OpenSlide, (out_px, out_px, 3) uint8 RGB; raises on a
        decoding error."""
        x, y = self.coords[i]
        region = self._open().read_region((int(x), int(y)), self.level, (self.size, self.size))
        if not self.resize:
            return np.asarray(region.convert("RGB"))
        return resize_patch(region, self.input_px, self.clam_pixels)

    def read(self, i: int) -> np.ndarray:
        """Patch ``i`` as (out_px, out_px, 3) uint8 RGB; raises on a decoding error."""
        return self.read_openslide(i)

    def __len__(self) -> int:
        return len(self.coords)

    def read_guarded(self, i: int, read) -> tuple[np.ndarray | None, str]:
        """(``read(i)``, "") or (None, what failed), the OpenSlide handle reopened."""
        try:
            return read(i), ""
        except Exception as exc:  # openslide.OpenSlideError and friends
            x, y = self.coords[i]
            error = (f"patch #{int(i)} at level-0 ({int(x)}, {int(y)}), level "
                     f"{self.level}: {type(exc).__name__}: {exc}")
            if self._slide is not None:
                try:
                    self._slide.close()
                except Exception:
                    pass
            self._slide = None
            return None, error

    def __getitem__(self, indices):
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.zeros((len(indices), self.out_px, self.out_px, 3), dtype=np.uint8)
        ok = np.ones(len(indices), dtype=bool)
        error = ""
        for j, i in enumerate(indices):
            px, why = self.read_guarded(int(i), self.read)
            if px is None:
                ok[j] = False
                error = error or why
            else:
                out[j] = px
        return {"index": indices, "pixels": out, "ok": ok, "error": error}

    def __getstate__(self):  # a worker gets the paths, never an open handle
        d = dict(self.__dict__)
        d["_slide"] = None
        return d
