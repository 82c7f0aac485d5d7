"""Small coords files and slides for the feature tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_grid_coords(slide_path, out, n=None, size0=256, level=0, input_px=224,
                      slide_id=None, **extra) -> Path:
    """A regular grid of ``size0``-px (level-0) patches over the slide, CLAM layout."""
    import openslide

    s = openslide.OpenSlide(str(slide_path))
    w, h = s.dimensions
    ds = s.level_downsamples[level]
    s.close()
    xs, ys = np.meshgrid(np.arange(0, w - size0 + 1, size0), np.arange(0, h - size0 + 1, size0))
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)
    if n is not None:
        coords = coords[:n]
    attrs = dict(
        patch_level=level, patch_size=int(round(size0 / ds)), patch_size_level0=size0,
        read_level=level, read_downsample=float(ds), encoder_input_px=input_px,
        slide_id=slide_id or Path(slide_path).stem, level_dim=np.array([w, h], dtype=np.int64),
    )
    attrs.update(extra)
    out = Path(out)
    with h5py.File(out, "w") as f:
        d = f.create_dataset("coords", data=coords)
        for k, v in attrs.items():
            d.attrs[k] = v
            f.attrs[k] = v
    return out


def write_tiled_tiff(path, shape=(1024, 1024), tile=256, seed=0, corrupt_tile=None) -> Path:
    """A tiled JPEG TIFF OpenSlide reads (generic-tiff); optionally one tile zeroed out."""
    import tifffile

    rng = np.random.default_rng(seed)
    img = (rng.integers(0, 64, (*shape, 3)) + 170).astype(np.uint8)
    tifffile.imwrite(path, img, tile=(tile, tile), compression="jpeg", photometric="rgb",
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    if corrupt_tile is not None:
        with tifffile.TiffFile(path) as t:
            off = t.pages[0].dataoffsets[corrupt_tile]
            cnt = t.pages[0].databytecounts[corrupt_tile]
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(b"\x00" * cnt)  # "Not a JPEG file"
    return Path(path)
