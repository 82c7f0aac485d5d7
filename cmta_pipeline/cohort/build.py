"""The cohort stage end to end (:func:`build_cohort`, what ``cmta cohort`` runs): patients
with genomics, survival and (optionally) usable slides; labels, cross-validation folds and
per-fold preprocessing of the genomic features.

Output layout, in its OUTDIR:

* ``cohort.tsv``: one row per patient kept: case_id, survival_months, censorship
  (1 = censored), event (= 1 - censorship), slide_ids (';'-joined, empty for a
  genomics-only cohort).
* ``audit.tsv``: every patient dropped: case_id, reason, detail.
* ``folds/fold_{k}/``: ``patients.tsv`` (case_id, split, survival_months, censorship,
  event, label, slide_ids), ``omics.h5`` (preprocessed features), ``preprocessing.tsv``
  (per-feature statistics fitted on the fold's train rows) and ``fold.json``.
* ``folds.json``, written last: the completion marker (n_folds, families, omic sizes,
  protocol settings).

Every fitted quantity (bin edges by default, medians, means, standard deviations, the
list of constant features) comes from the fold's ``train`` rows only; ``inner_val`` and
``heldout`` rows are transformed with them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from ..fileio import atomic_output, fresh_outputs, write_text_atomic
from ..genomics.output import read_genomics_dir
from .assemble import assemble_cohort, read_slides
from .files import SPLITS, write_fold
from .folds import inner_split, read_split_files, site_folds, site_labels, stratified_folds
from .labels import assign_labels, fit_bin_edges
from .preprocessing import fit_transform_fold

log = logging.getLogger(__name__)

#: Written last: its presence marks a finished cohort folder.
MARKER = "folds.json"
#: Everything else a run writes (removed, with the marker, before a run and after a failed one).
COHORT_OUTPUTS = ("cohort.tsv", "audit.tsv", "folds")


@dataclass
class Features:
    """The genomic inputs of the cohort's patients, before any fitting."""

    families: dict[str, list[str]]  # family -> feature names
    names: list[str]  # every feature of a family, sorted
    X: np.ndarray  # patients x features, raw values
    modality: np.ndarray  # per feature: rnaseq, cnv or mut


def build_cohort(
    genomics_dir: str | os.PathLike,
    outdir: str | os.PathLike,
    slide_sheet: str | os.PathLike | None = None,
    tiles_summary: str | os.PathLike | None = None,
    n_folds: int = 5,
    n_bins: int = 4,
    seed: int = 1,
    splits: str | os.PathLike | None = None,
    labels_from: str = "train",
    inner_val_fraction: float = 0.0,
    log1p_rnaseq: bool = False,
    standardize: bool = True,
    drop_constant: bool = True,
    split_by: str = "patient", site_sheet: str | os.PathLike | None = None,
) -> dict:
    """Assemble the cohort, make folds, preprocess per fold and write OUTDIR (module doc); returns
    ``folds.json``. ``drop_constant=False`` keeps features constant on a fold's train rows (the
    authors' code; ``protocol: paper``); ``split_by="site"``: site-preserved folds (:func:`_sites`)."""
    outdir = Path(outdir)
    # the earlier run's marker first, then its outputs: a failure below leaves none of them
    with fresh_outputs(outdir, COHORT_OUTPUTS, marker=MARKER):
        _check_settings(labels_from, inner_val_fraction, n_bins)
        families, matrix, survival, gdropped = read_genomics_dir(genomics_dir)
        survival, gdropped = _without_survival_moved_to_dropped(survival, gdropped)
        slides = read_slides(slide_sheet, tiles_summary)
        cohort, audit = assemble_cohort(survival, matrix.index, gdropped, slides)
        ids = cohort.index.to_numpy()
        times = cohort["survival_months"].to_numpy(float)
        cens = cohort["censorship"].to_numpy(int)
        sites = _sites(split_by, ids, site_sheet or slide_sheet, survival, genomics_dir)
        cohort = cohort if sites is None else cohort.assign(site=sites)
        fold_train, fold_heldout, split_source = heldout_folds(
            ids, times, cens, set(audit["case_id"]), splits, n_folds, n_bins, seed, sites)
        n_folds = len(fold_train)
        all_edges = fit_bin_edges(times, cens, n_bins) if labels_from == "all" else None
        if labels_from == "all":
            log.warning("labels_from all: OPTIMISTIC, the held-out patients' times shape the bin edges")
        names = sorted({f for feats in families.values() for f in feats})
        features = Features(
            families=families, names=names, X=matrix.loc[ids, names].to_numpy(np.float64),
            modality=np.array([f.rsplit("_", 1)[1] for f in names]),
        )

        # Write everything but the marker.
        with atomic_output(outdir / "cohort.tsv") as tmp:
            cohort.to_csv(tmp, sep="\t")
        with atomic_output(outdir / "audit.tsv") as tmp:
            audit.to_csv(tmp, sep="\t", index=False)
        per_fold = []
        for k in range(n_folds):
            split = fold_split(k, fold_train[k], fold_heldout[k], times, cens, n_bins, inner_val_fraction, seed)
            info = build_fold(
                outdir / "folds" / f"fold_{k}", k, cohort, split, features, n_bins, all_edges,
                log1p_rnaseq, standardize, drop_constant,
            )
            per_fold.append(info)
            log.info("fold %d: %s, omic sizes %s", k, info["n"], info["omic_sizes"])

        summary = {
            "n_folds": n_folds,
            "family_names": list(families),
            "omic_sizes": [f["omic_sizes"] for f in per_fold],
            "raw_omic_sizes": [len(families[n]) for n in families],
            "n_bins": n_bins,
            "bin_edges": [f["bin_edges"] for f in per_fold],
            "labels_from": labels_from,
            "splits": split_source, "split_by": split_by,
            "seed": seed,
            "inner_val_fraction": inner_val_fraction,
            "log1p_rnaseq": log1p_rnaseq,
            "standardize": standardize,
            "drop_constant": drop_constant,
            "n_patients": int(len(ids)),
            "n_dropped": int(len(audit)),
            "with_slides": slides is not None,
            "genomics_dir": str(genomics_dir),
        }
        write_text_atomic(outdir / MARKER, json.dumps(summary, indent=1) + "\n")
        return summary


def _check_settings(labels_from: str, inner_val_fraction: float, n_bins: int) -> None:
    if labels_from not in ("train", "all"):
        raise CMTAError(f"labels_from: {labels_from!r} must be 'train' or 'all'")
    if not 0 <= inner_val_fraction < 1:
        raise CMTAError(f"inner_val_fraction: {inner_val_fraction} must be in [0, 1)")
    if n_bins < 1:
        raise CMTAError(f"n_bins: {n_bins} must be at least 1")


def _without_survival_moved_to_dropped(survival: pd.DataFrame, gdropped: pd.DataFrame):
    """A genomics folder written with --missing-survival keep (new patients) has patients
    without survival: they are dropped here, as "no survival"."""
    no_surv = survival["survival_months"].isna() | survival["censorship"].isna()
    if no_surv.any():
        gdropped = pd.concat(
            [gdropped, pd.DataFrame({"case_id": survival.index[no_surv], "reason": "no survival"})],
            ignore_index=True,
        )
        survival = survival[~no_surv].astype({"censorship": int})
    return survival, gdropped


def _sites(split_by: str, ids, sheet, survival: pd.DataFrame, where) -> np.ndarray | None:
    """None for ``split_by="patient"``; for ``"site"`` each patient's site (written to
    ``cohort.tsv``'s ``site`` column): a ``site`` column of the sheet or the genomics'
    patients table, else the TCGA barcode's tissue source site."""
    if split_by == "patient":
        return None
    if split_by != "site":
        raise CMTAError(f"cohort.split_by: {split_by!r} is not one of patient, site")
    return site_labels(ids, _given_sites(sheet, survival), str(where))


def _given_sites(slide_sheet, survival: pd.DataFrame) -> dict[str, str]:
    """case_id -> site from a ``site`` column of the slide sheet or the patients table."""
    given: dict[str, str] = {}
    if "site" in survival.columns:
        given.update(survival["site"].dropna().astype(str).to_dict())
    if slide_sheet is not None and Path(slide_sheet).is_file():
        sheet = pd.read_csv(slide_sheet, sep="\t", dtype=str, comment="#").dropna(how="all")
        if "site" in sheet.columns and "case_id" in sheet.columns:
            for case, g in sheet.dropna(subset=["site"]).groupby("case_id"):
                values = sorted(set(g["site"].str.strip()))
                if len(values) > 1:
                    raise CMTAError(f"{slide_sheet}: patient {case} has slides of several sites "
                                    f"({', '.join(values)}); column site")
                given[str(case).strip()] = values[0]
    return given


def heldout_folds(
    ids: np.ndarray, times: np.ndarray, cens: np.ndarray, audited: set, splits, n_folds: int,
    n_bins: int, seed: int, sites: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """(train rows, held-out rows) per fold and where the split came from: the split files
    in ``splits``, folds stratified by event x time bin, or (``sites`` given) site-preserved
    folds stratified as far as whole sites allow."""
    if sites is not None and splits is not None:
        raise CMTAError("cohort.split_by: site makes its own folds; set cohort.splits: null")
    index_of = {c: i for i, c in enumerate(ids)}
    fold_heldout: list[np.ndarray] = []
    fold_train: list[np.ndarray] = []
    if splits is not None:
        for k, (tr, va) in enumerate(read_split_files(splits)):
            for name in tr + va:
                if name not in index_of and name not in audited:
                    raise CMTAError(
                        f"{Path(splits) / f'splits_{k}.csv'}: patient {name} is unknown (not in "
                        "the genomic data nor in the audit); use split files of this cohort"
                    )
            fold_train.append(np.array([index_of[c] for c in tr if c in index_of], dtype=int))
            fold_heldout.append(np.array([index_of[c] for c in va if c in index_of], dtype=int))
        return fold_train, fold_heldout, str(splits)
    if n_folds < 2:
        raise CMTAError(f"n_folds: {n_folds} must be at least 2")
    event = 1 - cens
    strat_edges = fit_bin_edges(times, cens, n_bins)
    # event-major order: the per-fold event counts differ by at most one
    strata = np.where(event == 1, n_bins, 0) + assign_labels(times, strat_edges)
    fold_of = stratified_folds(strata, n_folds, seed) if sites is None else site_folds(sites, strata, n_folds, seed)
    for k in range(n_folds):
        fold_heldout.append(np.flatnonzero(fold_of == k))
        fold_train.append(np.flatnonzero(fold_of != k))
    how = "stratified by event x time bin" if sites is None else "site-preserved (each site held out whole)"
    return fold_train, fold_heldout, f"{how}, seed {seed}"


def fold_split(
    k: int, tr: np.ndarray, ho: np.ndarray, times: np.ndarray, cens: np.ndarray, n_bins: int,
    inner_val_fraction: float, seed: int,
) -> np.ndarray:
    """Each patient's role in fold ``k``: "train", "inner_val", "heldout" or "" (none)."""
    if len(tr) == 0 or len(ho) == 0:
        raise CMTAError(f"fold {k}: {len(tr)} train and {len(ho)} held-out patients; both must be > 0")
    split = np.full(len(times), "", dtype=object)
    split[tr] = "train"
    if inner_val_fraction > 0:
        tr_edges = fit_bin_edges(times[tr], cens[tr], n_bins)
        strata_tr = np.where(cens[tr] == 0, n_bins, 0) + assign_labels(times[tr], tr_edges)
        inner = inner_split(strata_tr, inner_val_fraction, seed + 1000 + k)
        split[tr[inner]] = "inner_val"
    split[ho] = "heldout"
    return split


def build_fold(
    fdir: Path, k: int, cohort: pd.DataFrame, split: np.ndarray, features: Features, n_bins: int,
    all_edges: np.ndarray | None, log1p_rnaseq: bool, standardize: bool, drop_constant: bool = True,
) -> dict:
    """Labels and preprocessing of fold ``k``, written to ``fdir``; returns its fold.json."""
    ids = cohort.index.to_numpy()
    times = cohort["survival_months"].to_numpy(float)
    cens = cohort["censorship"].to_numpy(int)
    event = 1 - cens
    rows = np.flatnonzero(split != "")
    train_mask = split[rows] == "train"
    edges = all_edges if all_edges is not None else fit_bin_edges(
        times[split == "train"], cens[split == "train"], n_bins
    )
    labels = assign_labels(times[rows], edges)
    Xk, stats = fit_transform_fold(features.X[rows], features.modality, train_mask, log1p_rnaseq, standardize,
                                   drop_constant)
    kept = stats["kept"].to_numpy(bool)
    col_of = {f: i for i, f in enumerate(features.names)}
    fam_cols = []
    for name, feats in features.families.items():
        cols = [col_of[f] for f in feats if kept[col_of[f]]]
        if not cols:
            raise CMTAError(f"fold {k}: family {name!r} has no non-constant feature on the train rows")
        fam_cols.append(cols)
    patients = pd.DataFrame({
        "case_id": ids[rows], "split": split[rows], "survival_months": times[rows],
        "censorship": cens[rows], "event": event[rows], "label": labels,
        "slide_ids": cohort["slide_ids"].to_numpy()[rows],
    })
    stats.insert(0, "feature", features.names)
    stats.insert(1, "modality", features.modality)
    info = {
        "fold": k, "omic_sizes": [len(c) for c in fam_cols], "bin_edges": [float(e) for e in edges],
        "n": {s: int((split == s).sum()) for s in SPLITS},
        "n_unassigned": int(len(ids) - len(rows)),
        "n_constant_dropped": int((stats["reason"] == "constant on train").sum()),
        "n_all_missing_dropped": int((stats["reason"] == "missing in every train patient").sum()),
        "n_imputed_values": int(np.isnan(features.X[rows]).sum()),
        "event_rate": {s: float(event[split == s].mean()) if (split == s).any() else None for s in SPLITS},
    }
    write_fold(fdir, patients, stats, Xk, ids[rows], list(features.families), fam_cols, features.names, info)
    return info
