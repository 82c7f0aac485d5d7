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


#: TCGA barcode: TCGA-<tissue source site>-<participant>
TCGA_SITE = re.compile(r"^TCGA-([A-Z0-9]{2})-", re.IGNORECASE)


def site_labels(ids, given: dict[str, str] | None = None, where: str = "the cohort") -> np.ndarray:
    """The site of each patient: ``given`` (a ``site`` column of the slide sheet or the
    patients table) where it has one, else the tissue source site of a TCGA barcode
    (TCGA-**XX**-...). A patient with neither: one error naming it."""
    given = given or {}
    out = []
    for c in map(str, ids):
        site = str(given.get(c, "") or "").strip()
        if not site or site.lower() == "nan":
            m = TCGA_SITE.match(c)
            if not m:
                raise CMTAError(f"{where}: patient {c} has no site (cohort.split_by: site needs a TCGA "
                                "barcode TCGA-XX-... or a 'site' column in the slide sheet)")
            site = m.group(1).upper()
        out.append(site)
    return np.asarray(out, dtype=object)


def site_folds(sites: np.ndarray, strata: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per patient with every site's patients in one fold (site-preserved folds,
    Howard et al. 2021). Sites are placed largest first (equal sizes in a seeded order), each
    in the fold where it adds least to the squared per-stratum and per-fold counts: folds of
    near-equal size, stratified by event x time bin as far as whole sites allow.
    Fewer sites than folds: a one-line error."""
    sites = np.asarray(sites, dtype=object)
    names, inverse = np.unique(sites.astype(str), return_inverse=True)
    if len(names) < n_folds:
        raise CMTAError(f"cohort.split_by: site: {len(names)} site(s) ({', '.join(names[:10])}) cannot "
                        f"make {n_folds} folds with each site held out whole; lower cohort.n_folds "
                        "or use split_by: patient")
    strata_ids, s_inv = np.unique(strata, return_inverse=True)
    per_site = np.zeros((len(names), len(strata_ids)))
    np.add.at(per_site, (inverse, s_inv), 1)
    size = per_site.sum(1)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(names)), -size))
    counts = np.zeros((n_folds, len(strata_ids)))
    site_fold = np.empty(len(names), dtype=int)
    for s in order:
        after = counts + per_site[s]
        cost = ((after ** 2).sum(1) - (counts ** 2).sum(1)) + (after.sum(1) ** 2 - counts.sum(1) ** 2)
        # an empty fold takes the next site first, so that no fold stays empty
        cost = np.where(counts.sum(1) == 0, -np.inf, cost)
        best = np.flatnonzero(cost == cost.min())
        f = int(best[rng.integers(len(best))])
        counts[f] += per_site[s]
        site_fold[s] = f
    return site_fold[inverse]
