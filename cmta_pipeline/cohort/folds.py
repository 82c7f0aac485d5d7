"""Cross-validation folds: the published split files, or folds stratified by event and
time bin, and an optional inner validation split of each fold's training rows."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError


def read_split_files(split_dir: str | os.PathLike) -> list[tuple[list[str], list[str]]]:
    """(train ids, val ids) per fold from ``splits_{k}.csv`` files (header ``,train,val``)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise CMTAError(f"split folder not found: {split_dir}")
    files = {}
    for f in split_dir.glob("splits_*.csv"):
        m = re.fullmatch(r"splits_(\d+)\.csv", f.name)
        if m:
            files[int(m.group(1))] = f
    if not files:
        raise CMTAError(f"{split_dir}: no splits_<k>.csv files")
    if sorted(files) != list(range(len(files))):
        raise CMTAError(f"{split_dir}: split files are not numbered 0..{len(files) - 1}: {sorted(files)}")
    out = []
    for k in range(len(files)):
        df = pd.read_csv(files[k], dtype=str)
        miss = [c for c in ("train", "val") if c not in df.columns]
        if miss:
            raise CMTAError(f"{files[k]}: missing column(s) {', '.join(miss)} (layout ',train,val')")
        train = df["train"].dropna().str.strip().tolist()
        val = df["val"].dropna().str.strip().tolist()
        both = set(train) & set(val)
        if both:
            raise CMTAError(f"{files[k]}: patient {sorted(both)[0]} is in both train and val")
        out.append((train, val))
    return out


def stratified_folds(strata: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per patient: patients sorted by stratum (random order within) and dealt
    round-robin, so each fold's count per stratum (and per event status, when strata are
    ordered by event first) differs by at most one between folds."""
    n = len(strata)
    if n < n_folds:
        raise CMTAError(f"{n} patients cannot make {n_folds} folds")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), strata))
    folds = np.empty(n, dtype=int)
    folds[order] = np.arange(n) % n_folds
    return folds


def inner_split(strata: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of about ``fraction`` of the patients, spread evenly over strata."""
    n = len(strata)
    if fraction <= 0 or n == 0:
        return np.zeros(n, dtype=bool)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), strata))
    pos = np.arange(n)
    pick = np.floor((pos + 1) * fraction) > np.floor(pos * fraction)
    mask = np.zeros(n, dtype=bool)
    mask[order[pick]] = True
    return mask
