"""Patch-feature files: the layouts this pipeline writes and the ones users bring.

Accepted layouts (read by :func:`load_features`):

* ``<slide_id>.features.h5`` written by ``cmta extract``: dataset ``features`` (N x D
  float32) and ``coords`` (N x 2 int64, level-0 top-left x, y).
* CLAM ``h5_files/<slide_id>.h5`` and TRIDENT ``features_<encoder>/<slide_id>.h5``: the
  same two datasets (TRIDENT may store ``features`` as 1 x N x D; the leading 1 is dropped).
  TRIDENT's job folder (``<job>/20x_256px_0px_overlap/features_uni_v1/``) is found by
  :func:`find_feature_file` given the job folder and an encoder; the ``encoder`` attribute
  (or the ``features_<encoder>`` folder name) says whose features they are, checked by
  :func:`check_encoder` against the width and encoder a run expects.
* ``<slide_id>.pt``: a torch tensor N x D (what MCAT/CMTA load from ``pt_files/``).

:func:`find_feature_file` looks for a slide's file under a folder in that order.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from ..errors import CMTAError, load_refused
from ..ids import check_id
from .encoders.registry import ALIASES

#: Where a slide's features may be, relative to a features folder, in order of preference.
CANDIDATES = (
    "{sid}.features.h5",
    "{sid}.h5",
    "h5_files/{sid}.h5",
    "{sid}.pt",
    "pt_files/{sid}.pt",
)


def find_feature_file(features_dir: str | os.PathLike, slide_id: str,
                      encoder: str | None = None) -> Path | None:
    """The first existing feature file of ``slide_id`` under ``features_dir``, or None.
    TRIDENT's job folder is searched too: ``features_<encoder>/<slide_id>.h5`` and
    ``*/features_<encoder>/<slide_id>.h5``, of ``encoder`` or, without it, of the one
    encoder there (features of several: a one-line error)."""
    root = Path(features_dir)
    check_id(slide_id, "slide id", f"features of {root}")  # a file name, never a pattern or a path
    for pattern in CANDIDATES:
        p = root / pattern.format(sid=slide_id)
        if p.is_file():
            return p
    names = [encoder, *[a for a, c in ALIASES.items() if c == encoder]] if encoder else ["*"]
    hits = []
    for name in names:
        name = name if name == "*" else glob.escape(name)
        hits += sorted(root.glob(f"features_{name}/{slide_id}.h5")) + sorted(
            root.glob(f"*/features_{name}/{slide_id}.h5"))
    folders = sorted({p.parent.name for p in hits})
    if len(folders) > 1:
        raise CMTAError(f"{root}: features of slide {slide_id} by several encoders "
                        f"({', '.join(folders)}); give one features_<encoder> folder")
    return hits[0] if hits else None


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
        raise load_refused(path, exc, "feature file") from None
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise CMTAError(f"{path}: features must be N x D with N > 0, got shape {arr.shape}")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        r, c = (int(i) for i in bad[0])
        raise CMTAError(f"{path}: features contain NaN or infinite values ({len(bad)}; the first: "
                        f"patch {r}, feature {c}: {float(arr[r, c])})")
    return arr


def feature_file_encoder(path: str | os.PathLike) -> str:
    """The encoder a feature file says it was made with, by its registry name (``cmta
    extract`` and TRIDENT write an ``encoder`` attribute; ``resnet50_trunc`` is
    resnet50); "" when the file does not say (a .pt, CLAM's h5)."""
    path = Path(path)
    if path.suffix == ".pt" or not path.is_file():
        return ""
    import h5py

    from .encoders.registry import canonical

    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("encoder") or f.attrs.get("enc_name") or (
                f["features"].attrs.get("encoder") if "features" in f else None)
    except Exception:
        return ""
    if isinstance(v, bytes):
        v = v.decode()
    if not v and path.parent.name.startswith("features_"):  # TRIDENT's folder name
        v = path.parent.name[len("features_"):]
    return canonical(str(v)) if v else ""


def features_encoder(features_dir: str | os.PathLike, slide_ids: list[str]) -> str:
    """The encoder of the first of ``slide_ids`` that has a feature file saying it."""
    for sid in slide_ids:
        p = find_feature_file(features_dir, sid)
        if p is not None and (enc := feature_file_encoder(p)):
            return enc
    return ""


def check_encoder(path, dim: int, encoder: str = "", expected_dim: int | None = None,
                  expected_encoder: str = "") -> None:
    """A one-line error where features of ``path`` (``dim`` wide, made by ``encoder``) are
    not those expected: another width, or another encoder named by both sides."""
    from .encoders.registry import REGISTRY, canonical

    expected_encoder = canonical(expected_encoder) if expected_encoder else ""
    if expected_encoder and encoder and encoder != expected_encoder:
        raise CMTAError(f"{path}: features of encoder {encoder}, expected {expected_encoder}")
    if expected_dim is None and expected_encoder in REGISTRY:
        expected_dim = REGISTRY[expected_encoder].dim
    if expected_dim is not None and dim != expected_dim:
        who = f" ({expected_encoder})" if expected_encoder else ""
        raise CMTAError(f"{path}: features are {dim}-d, expected {expected_dim}-d{who}")


def load_bag(features_dir: str | os.PathLike, slide_ids: list[str]) -> np.ndarray:
    """All patches of a patient's slides pooled into one (M, D) bag."""
    parts, encoders = [], {}
    for sid in slide_ids:
        p = find_feature_file(features_dir, sid)
        if p is None:
            raise CMTAError(f"no feature file for slide {sid!r} under {features_dir}")
        parts.append(load_features(p))
        if len(slide_ids) > 1 and (enc := feature_file_encoder(p)):
            encoders.setdefault(enc, p)
    if len(encoders) > 1:  # equal widths (UNI and ResNet-50 are both 1024-d) do not say
        raise CMTAError(f"slides {slide_ids} have features of different encoders: "
                        + ", ".join(f"{p} ({e})" for e, p in encoders.items()))
    if not parts:
        raise CMTAError("no slides given for the bag")
    dims = {p.shape[1] for p in parts}
    if len(dims) > 1:
        raise CMTAError(f"slides {slide_ids} have features of different widths {sorted(dims)}")
    return np.concatenate(parts, axis=0)
