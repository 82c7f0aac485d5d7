"""Synthetic pyramidal slides with tissue of known shape, for tests, benchmarks and demos.

Shapes are given in micrometres, so the same "specimen" can be scanned at any pixel size
(e.g. 0.25 um/px for 40x and 0.5 um/px for 20x) and the patch grid compared between them.
Slides are written as tiled, pyramidal TIFFs that OpenSlide opens as generic TIFF, with
the pixel size in the TIFF resolution tags. Tiles are produced one at a time, so slides far
larger than memory (80,000 x 60,000 px) can be written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

BACKGROUND = (243, 243, 241)


@dataclass(frozen=True)
class Shape:
    """A rectangle or an ellipse (its bounding box) in micrometres; ``hole`` cuts it out."""

    kind: str
    x: float
    y: float
    w: float
    h: float
    hole: bool = False

    @property
    def area_um2(self) -> float:
        return self.w * self.h * (np.pi / 4 if self.kind == "ellipse" else 1.0)


def render_mask(shapes: list[Shape], width_um: float, height_um: float, mpp: float) -> np.ndarray:
    """uint8 mask (1 = tissue) of the shapes at ``mpp`` micrometres per pixel."""
    w, h = int(np.ceil(width_um / mpp)), int(np.ceil(height_um / mpp))
    mask = np.zeros((h, w), np.uint8)
    for s in shapes:
        value = 0 if s.hole else 1
        if s.kind == "rect":
            x0, y0 = int(round(s.x / mpp)), int(round(s.y / mpp))
            x1, y1 = int(round((s.x + s.w) / mpp)), int(round((s.y + s.h) / mpp))
            mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = value
        elif s.kind == "ellipse":
            sub = 16  # sub-pixel precision for cv2.ellipse
            centre = (int(round((s.x + s.w / 2) / mpp * sub)), int(round((s.y + s.h / 2) / mpp * sub)))
            axes = (int(round(s.w / 2 / mpp * sub)), int(round(s.h / 2 / mpp * sub)))
            cv2.ellipse(mask, centre, axes, 0, 0, 360, value, thickness=-1, lineType=cv2.LINE_8, shift=4)
        else:
            raise ValueError(f"unknown shape kind {s.kind!r}")
    return mask


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """An H&E-like pink/purple tile with nuclei-like dark dots."""
    base = np.empty((size, size, 3), np.float32)
    base[:] = (226, 150, 196)
    base += rng.normal(0, 10, (size, size, 1))
    for _ in range(size * size // 900):
        cx, cy = rng.integers(0, size, 2)
        cv2.circle(base, (int(cx), int(cy)), int(rng.integers(2, 5)), (120, 60, 150), -1)
    return np.clip(base, 0, 255).astype(np.uint8)


def write_synthetic_slide(
    path: str | os.PathLike,
    shapes: list[Shape],
    width_um: float,
    height_um: float,
    mpp: float,
    downsamples: tuple[int, ...] = (1, 4, 16, 64),
    tile: int = 256,
    compression: str = "jpeg",
    mask_mpp: float | None = None,
    seed: int = 0,
) -> tuple[int, int]:
    """Write a pyramidal tiled TIFF of the shapes; return its level-0 (width, height) in px.

    ``mask_mpp`` is the resolution at which shapes are rasterised (default: ``mpp``, exact;
    coarser values make huge slides fast to write, with edges accurate to ``mask_mpp``).
    """
    import tifffile

    mask_mpp = mask_mpp or mpp
    width, height = int(round(width_um / mpp)), int(round(height_um / mpp))
    mask = render_mask(shapes, width_um, height_um, mask_mpp)
    rng = np.random.default_rng(seed)
    textures = [_texture(rng, tile) for _ in range(4)]
    background = np.empty((tile, tile, 3), np.uint8)
    background[:] = BACKGROUND

    def tiles(ds: int):
        lw, lh = -(-width // ds), -(-height // ds)
        scale = mpp * ds / mask_mpp  # mask pixels per level pixel
        for ty in range(0, lh, tile):
            for tx in range(0, lw, tile):
                ys = ((np.arange(ty, ty + tile) + 0.5) * scale).astype(np.int64)
                xs = ((np.arange(tx, tx + tile) + 0.5) * scale).astype(np.int64)
                inside = (ys[:, None] < mask.shape[0]) & (xs[None, :] < mask.shape[1])
                m = mask[np.minimum(ys, mask.shape[0] - 1)[:, None], np.minimum(xs, mask.shape[1] - 1)[None, :]]
                m = (m > 0) & inside
                if not m.any():
                    yield background
                    continue
                tex = textures[(tx // tile + ty // tile) % len(textures)]
                yield np.where(m[..., None], tex, background)

    res = 1e4 / mpp  # pixels per centimetre
    with tifffile.TiffWriter(path, bigtiff=width * height > 2**31) as tif:
        for i, ds in enumerate(downsamples):
            lw, lh = -(-width // ds), -(-height // ds)
            tif.write(
                tiles(ds),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                resolution=(res / ds, res / ds),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
            )
    return width, height


def demo_specimen() -> tuple[list[Shape], float, float]:
    """Shapes of a small specimen (about 3 x 2 mm): a grid-aligned block, an ellipse with a
    hole, and a speck too small to count as tissue. Returns (shapes, width_um, height_um)."""
    shapes = [
        Shape("rect", 256, 384, 128 * 6, 128 * 4),  # exactly 24 patches of 128 um
        Shape("ellipse", 1408, 256, 1280, 1536),
        Shape("ellipse", 1920, 896, 256, 256, hole=True),
        Shape("rect", 512, 1600, 40, 40),  # 0.0016 mm^2: below the biopsy preset's minimum
    ]
    return shapes, 3072.0, 2048.0
