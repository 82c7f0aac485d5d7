"""The patch grid over the tissue mask, and the CLAM-layout coordinates file.

The grid is anchored at the slide's level-0 origin with a step in level-0 pixels, so the
same physical grid results whatever the scan magnification. Which cells to keep is decided
for all cells at once with an integral image of the mask (no Python loop per patch).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import CMTAError
from ..fileio import atomic_output


def grid_coords(width: int, height: int, patch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left x and y (level 0) of every whole patch that fits in the slide."""
    xs = np.arange(0, width - patch + 1, step, dtype=np.int64)
    ys = np.arange(0, height - patch + 1, step, dtype=np.int64)
    return xs, ys


def tissue_fraction(mask: np.ndarray, downsample: float, xs: np.ndarray, ys: np.ndarray, patch: int) -> np.ndarray:
    """Fraction of each grid cell covered by ``mask`` (len(ys) x len(xs)).

    ``mask`` is the tissue mask at ``downsample`` relative to level 0; cell borders are
    rounded to mask pixels.
    """
    h, w = mask.shape
    integral = cv2.integral(mask.astype(np.uint8)).astype(np.int64)  # (h+1, w+1)
    x0 = np.clip(np.rint(xs / downsample), 0, w).astype(np.int64)
    x1 = np.clip(np.rint((xs + patch) / downsample), 0, w).astype(np.int64)
    y0 = np.clip(np.rint(ys / downsample), 0, h).astype(np.int64)
    y1 = np.clip(np.rint((ys + patch) / downsample), 0, h).astype(np.int64)
    total = (
        integral[y1[:, None], x1[None, :]]
        - integral[y0[:, None], x1[None, :]]
        - integral[y1[:, None], x0[None, :]]
        + integral[y0[:, None], x0[None, :]]
    )
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return np.where(area > 0, total / np.maximum(area, 1), 0.0)


def point_rule(mask: np.ndarray, downsample: float, xs: np.ndarray, ys: np.ndarray, patch: int, rule: str) -> np.ndarray:
    """CLAM-style point tests: ``center``, or the four points at centre +- patch/4
    (``four_point_hard``: all inside tissue and not in a hole; ``four_point_easy``: any)."""
    h, w = mask.shape

    def inside(dx: float, dy: float) -> np.ndarray:
        px = np.clip(((xs + dx) / downsample).astype(np.int64), 0, w - 1)
        py = np.clip(((ys + dy) / downsample).astype(np.int64), 0, h - 1)
        return mask[py[:, None], px[None, :]] > 0

    c, q = patch / 2, patch / 4
    if rule == "center":
        return inside(c, c)
    points = [inside(c + sx * q, c + sy * q) for sx in (-1, 1) for sy in (-1, 1)]
    stacked = np.stack(points)
    return stacked.all(axis=0) if rule == "four_point_hard" else stacked.any(axis=0)


def select_patches(
    mask: np.ndarray,
    downsample: float,
    dimensions: tuple[int, int],
    patch: int,
    step: int,
    rule: str = "fraction",
    min_fraction: float = 0.5,
) -> np.ndarray:
    """Level-0 top-left coordinates (N x 2, int64, x then y, row-major) of the kept patches."""
    xs, ys = grid_coords(dimensions[0], dimensions[1], patch, step)
    if len(xs) == 0 or len(ys) == 0:
        return np.zeros((0, 2), np.int64)
    if rule == "fraction":
        keep = tissue_fraction(mask, downsample, xs, ys, patch) >= min_fraction
    else:
        keep = point_rule(mask, downsample, xs, ys, patch, rule)
    iy, ix = np.nonzero(keep)
    return np.stack([xs[ix], ys[iy]], axis=1).astype(np.int64)


@dataclass
class CoordsFile:
    """Contents of a ``<slide_id>.coords.h5`` file."""

    coords: np.ndarray
    attrs: dict

    @property
    def read_level(self) -> int:
        """Level to read patches from (CLAM files only have ``patch_level``)."""
        return int(self.attrs.get("read_level", self.attrs.get("patch_level", 0)))

    @property
    def patch_size(self) -> int:
        """Patch side in pixels at :attr:`read_level`."""
        return int(self.attrs["patch_size"])


def write_coords(path: str | os.PathLike, coords: np.ndarray, attrs: dict) -> None:
    """Write the CLAM coordinates layout (dataset ``coords`` + attributes) atomically.

    Dict-valued attributes are stored as JSON strings; None values are skipped.
    """
    import h5py

    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset("coords", data=np.asarray(coords, np.int64).reshape(-1, 2))
            for key, value in attrs.items():
                if value is None:
                    continue
                if isinstance(value, dict):
                    value = json.dumps(value, sort_keys=True)
                ds.attrs[key] = value


def read_coords(path: str | os.PathLike) -> CoordsFile:
    """Read a coordinates file (``cmta tile``'s or CLAM's), with one-line errors.

    Attributes are those of the ``coords`` dataset over the file's own (CLAM keeps them on
    the dataset, other tools on the file). An empty grid is an error: nothing to encode.
    """
    import h5py

    if not os.path.isfile(path):
        raise CMTAError(f"{path}: coords file not found; run `cmta tile` on the slide first")
    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f:
                raise CMTAError(
                    f"{path}: no dataset 'coords' (keys: {', '.join(f.keys()) or 'none'}); "
                    "not a coords file from `cmta tile` or CLAM"
                )
            ds = f["coords"]
            raw = {**dict(f.attrs), **dict(ds.attrs)}
            coords = np.asarray(ds[()])
    except CMTAError:
        raise
    except Exception as exc:
        raise CMTAError(
            f"{path}: unreadable coords file ({type(exc).__name__}: {' '.join(str(exc).split())}); "
            "delete it and rerun `cmta tile`"
        ) from None
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise CMTAError(f"{path}: 'coords' must be N x 2, got shape {coords.shape}")
    if coords.shape[0] == 0:
        raise CMTAError(f"{path}: no patches (empty 'coords'); the slide has no tissue to encode")
    if not np.issubdtype(coords.dtype, np.number) or not np.isfinite(coords).all():
        raise CMTAError(f"{path}: 'coords' must be finite numbers")
    attrs = {}
    for key, value in raw.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode()
        attrs[key] = value
    return CoordsFile(coords=coords.astype(np.int64), attrs=attrs)
