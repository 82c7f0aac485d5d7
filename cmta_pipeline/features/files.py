"""Patch-feature files: the layouts this pipeline writes and the ones users bring.

Accepted layouts (read by :func:`load_features`):

* ``<slide_id>.features.h5`` written by ``cmta extract``: dataset ``features`` (N x D
  float32) and ``coords`` (N x 2 int64, level-0 top-left x, y).
* CLAM ``h5_files/<slide_id>.h5`` and TRIDENT ``features_<encoder>/<slide_id>.h5``: the
  same two datasets (TRIDENT may store ``features`` as 1 x N x D; the leading 1 is dropped).
* ``<slide_id>.pt``: a torch tensor N x D (what MCAT/CMTA load from ``pt_files/``).

:func:`find_feature_file` looks for a slide's file under a folder in that order.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CMTAError

#: Where a slide's features may be, relative to a features folder, in order of preference.
CANDIDATES = (
    "{sid}.features.h5",
    "{sid}.h5",
    "h5_files/{sid}.h5",
    "{sid}.pt",
    "pt_files/{sid}.pt",
)


def find_feature_file(features_dir: str | os.PathLike, slide_id: str) -> Path | None:
    """The first existing feature file of ``slide_id`` under ``features_dir``, or None."""
    root = Path(features_dir)
    for pattern in CANDIDATES:
        p = root / pattern.format(sid=slide_id)
        if p.is_file():
            return p
    return None


def load_features(path: str | os.PathLike) -> np.ndarray:
    """Features of one slide as an (N, D) float32 array, from an .h5 or .pt file."""
    path = Path(path)
    if not path.is_file():
        raise CMTAError(f"feature file not found: {path}")
    try:
        if path.suffix == ".pt":
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "features" in obj:
                obj = obj["features"]
            if not isinstance(obj, torch.Tensor):
                raise CMTAError(f"{path}: expected a tensor of features, got {type(obj).__name__}")
            arr = obj.float().numpy()
        else:
            import h5py

            with h5py.File(path, "r") as f:
                if "features" not in f:
                    raise CMTAError(f"{path}: no dataset 'features' (keys: {', '.join(f.keys())})")
                arr = np.asarray(f["features"][()], dtype=np.float32)
    except CMTAError:
        raise
    except Exception as exc:
        raise CMTAError(f"{path}: unreadable feature file ({exc})") from exc
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise CMTAError(f"{path}: features must be N x D with N > 0, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise CMTAError(f"{path}: features contain NaN or infinite values")
    return arr


def load_bag(features_dir: str | os.PathLike, slide_ids: list[str]) -> np.ndarray:
    """All patches of a patient's slides pooled into one (M, D) bag."""
    parts = []
    for sid in slide_ids:
        p = find_feature_file(features_dir, sid)
        if p is None:
            raise CMTAError(f"no feature file for slide {sid!r} under {features_dir}")
        parts.append(load_features(p))
    if not parts:
        raise CMTAError("no slides given for the bag")
    dims = {p.shape[1] for p in parts}
    if len(dims) > 1:
        raise CMTAError(f"slides {slide_ids} have features of different widths {sorted(dims)}")
    return np.concatenate(parts, axis=0)
