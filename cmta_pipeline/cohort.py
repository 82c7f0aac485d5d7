"""The cohort: patients with genomics, survival and (optionally) usable slides; labels,
cross-validation folds and per-fold preprocessing of the genomic features.

Output layout of :func:`build_cohort` (``cmta cohort``), in its OUTDIR:

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
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .errors import CMTAError
from .fileio import atomic_output, write_text_atomic
from .genomics import read_genomics_dir

log = logging.getLogger(__name__)

SPLITS = ("train", "inner_val", "heldout")
EPS = 1e-6  # widening of the outer bin edges, as in MCAT/CMTA


@dataclass
class FoldData:
    """One cross-validation fold, ready for training.

    ``patients``: index case_id; columns split ("train" | "inner_val" | "heldout"),
    survival_months, censorship, event, label (bin 0..n_bins-1), slide_ids (list[str]).
    ``omics``: case_id -> one float32 1-D array per family (length ``omic_sizes[i]``),
    preprocessed with statistics of this fold's train rows.
    """

    fold: int
    family_names: list[str]
    omic_sizes: list[int]
    bin_edges: np.ndarray
    patients: pd.DataFrame
    omics: dict[str, list[np.ndarray]]


# --------------------------------------------------------------------------- labels


def fit_bin_edges(times, censorship, n_bins: int = 4, eps: float = EPS) -> np.ndarray:
    """``n_bins + 1`` edges: quantiles of the uncensored times, outer edges widened to
    the min and max of all ``times`` (as MCAT/CMTA do, on whatever rows are given)."""
    times = np.asarray(times, dtype=float)
    cens = np.asarray(censorship)
    unc = times[cens == 0]
    if len(unc) < n_bins:
        raise CMTAError(
            f"only {len(unc)} uncensored patients to fit {n_bins} survival bins; use fewer bins"
        )
    edges = np.quantile(unc, np.linspace(0, 1, n_bins + 1))
    edges[0] = times.min() - eps
    edges[-1] = times.max() + eps
    if np.any(np.diff(edges) <= 0):
        raise CMTAError(
            f"survival bins are not distinct ({np.round(edges, 3).tolist()}): too few "
            "distinct event times for this many bins; use fewer bins"
        )
    return edges


def assign_labels(times, edges: np.ndarray) -> np.ndarray:
    """Bin index of each time; bins are [e_i, e_i+1), times outside go to the end bins."""
    return np.searchsorted(np.asarray(edges)[1:-1], np.asarray(times, float), side="right").astype(int)


# --------------------------------------------------------------------------- slides


def read_slides(sheet: str | os.PathLike | None, tiles_summary: str | os.PathLike | None) -> pd.DataFrame | None:
    """Slides and whether each is usable: columns slide_id, case_id, usable, reason.

    ``sheet`` lists the slides (slide_id, case_id); without it the tiling summary
    (slide_id, case_id, status, n_patches, reason) is the list. A slide is usable when
    the summary says ``ok`` with patches (or when there is no summary at all).
    """
    if sheet is None and tiles_summary is None:
        return None
    tables = {}
    for what, path in (("slide sheet", sheet), ("tiling summary", tiles_summary)):
        if path is None:
            continue
        path = Path(path)
        if not path.is_file():
            raise CMTAError(f"{what} not found: {path}")
        df = pd.read_csv(path, sep="\t", dtype=str, comment="#").dropna(how="all")
        need = ["slide_id", "case_id"] + (["status"] if what == "tiling summary" else [])
        miss = [c for c in need if c not in df.columns]
        if miss:
            raise CMTAError(f"{path}: missing column(s) {', '.join(miss)}")
        for c in ("slide_id", "case_id"):
            df[c] = df[c].astype(str).str.strip()
        tables[what] = df
    slides = (tables.get("slide sheet", tables.get("tiling summary")))[["slide_id", "case_id"]].drop_duplicates()
    slides["usable"] = True
    slides["reason"] = ""
    if "tiling summary" in tables:
        summ = tables["tiling summary"].drop_duplicates("slide_id", keep="last").set_index("slide_id")
        status = summ["status"].str.strip().str.lower()
        n_patches = pd.to_numeric(summ.get("n_patches", pd.Series(1, index=summ.index)), errors="coerce").fillna(0)
        ok = (status == "ok") & (n_patches > 0)
        why = summ.get("reason", pd.Series("", index=summ.index)).fillna("").astype(str)
        for i, sid in enumerate(slides["slide_id"]):
            if sid not in summ.index:
                slides.iloc[i, slides.columns.get_loc("usable")] = False
                slides.iloc[i, slides.columns.get_loc("reason")] = "not in the tiling summary"
            elif not ok[sid]:
                slides.iloc[i, slides.columns.get_loc("usable")] = False
                slides.iloc[i, slides.columns.get_loc("reason")] = (
                    f"tiling {status[sid]}" + (f": {why[sid]}" if why[sid] else "")
                    if status[sid] != "ok" else "no patches"
                )
    return slides.reset_index(drop=True)


def assemble_cohort(
    survival: pd.DataFrame, genomic_ids, genomics_dropped: pd.DataFrame, slides: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join survival, genomics and slides: (cohort table, audit table)."""
    audit: list[tuple[str, str, str]] = []
    genomic_ids = set(map(str, genomic_ids))
    gdrop = dict(zip(genomics_dropped["case_id"].astype(str), genomics_dropped["reason"].astype(str)))
    for case, reason in gdrop.items():
        audit.append((case, reason, "genomics stage"))
    kept = [c for c in survival.index if c in genomic_ids]
    for c in survival.index:
        if c not in genomic_ids:
            audit.append((c, "no genomics", "survival but no genomic profile"))
    slide_ids = {c: [] for c in kept}
    if slides is not None:
        by_case = {c: g for c, g in slides.groupby("case_id")}
        keep2 = []
        for c in kept:
            g = by_case.get(c)
            if g is None:
                audit.append((c, "no slides", "patient not in the slide sheet"))
                continue
            ok = g[g["usable"]]
            if ok.empty:
                detail = "; ".join(f"{s}: {r}" for s, r in zip(g["slide_id"], g["reason"]))
                audit.append((c, "failed slides only", detail))
                continue
            slide_ids[c] = sorted(ok["slide_id"])
            keep2.append(c)
        for c in sorted(set(by_case) - set(survival.index) - set(gdrop)):
            audit.append((c, "no genomics", "slides but no genomic profile or survival"))
        kept = keep2
    if not kept:
        raise CMTAError(
            "no patient left after joining genomics, survival and slides "
            f"({len(audit)} dropped: see the reasons in audit.tsv); check that case ids match"
        )
    cohort = survival.loc[kept, ["survival_months", "censorship"]].copy()
    cohort["event"] = 1 - cohort["censorship"]
    cohort["slide_ids"] = [";".join(slide_ids[c]) for c in kept]
    cohort.index.name = "case_id"
    audit_df = pd.DataFrame(audit, columns=["case_id", "reason", "detail"]).drop_duplicates("case_id")
    return cohort, audit_df


# --------------------------------------------------------------------------- folds


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


# --------------------------------------------------------------------------- preprocessing


def log1p_rnaseq_columns(X: np.ndarray, modality: np.ndarray) -> np.ndarray:
    """``X`` with log1p applied to its RNA-seq columns (in place); negative values are an error."""
    cols = modality == "rnaseq"
    if np.nanmin(X[:, cols], initial=0) < 0:
        raise CMTAError(
            "log1p_rnaseq: RNA-seq values are negative (already normalised, e.g. "
            "z-scores); turn log1p_rnaseq off for this input"
        )
    X[:, cols] = np.log1p(X[:, cols])
    return X


def impute_missing(X: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Missing values replaced by the train ``median`` (0 where the median itself is missing)."""
    fill = np.where(np.isnan(median), 0.0, median)
    return np.where(np.isnan(X), fill[None, :], X)


def standardize_columns(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """z-scores with the train ``mean`` and ``std`` (columns of std 0 are only centred)."""
    return (X - mean) / np.where(std > 0, std, 1.0)


def apply_preprocessing(
    X: np.ndarray, modality: np.ndarray, median: np.ndarray, mean: np.ndarray, std: np.ndarray,
    log1p_rnaseq: bool, standardize: bool,
) -> np.ndarray:
    """Transform raw ``X`` (patients x features) with stored per-fold statistics: the
    same steps, in the same order, as :func:`fit_transform_fold` (used by ``cmta predict``
    on new patients with a fold's ``preprocessing.tsv``)."""
    X = np.asarray(X, dtype=np.float64).copy()
    if log1p_rnaseq:
        X = log1p_rnaseq_columns(X, np.asarray(modality))
    X = impute_missing(X, np.asarray(median, dtype=np.float64))
    if standardize:
        X = standardize_columns(X, np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64))
    return X


def fit_transform_fold(
    X: np.ndarray, modality: np.ndarray, train: np.ndarray, log1p_rnaseq: bool, standardize: bool
) -> tuple[np.ndarray, pd.DataFrame]:
    """Preprocess ``X`` (patients x features) with statistics of the ``train`` rows.

    Optional log1p of RNA-seq features, imputation of missing values with the train
    median, drop of features constant on the train rows, z-scoring with the train mean
    and standard deviation (ddof 0). Returns (transformed X, per-feature statistics with
    a ``kept`` column). :func:`apply_preprocessing` repeats the transform from the
    statistics alone.
    """
    X = X.astype(np.float64, copy=True)
    if log1p_rnaseq:
        X = log1p_rnaseq_columns(X, modality)
    Xt = X[train]
    nan_train = np.isnan(Xt).sum(0)
    nan_all = np.isnan(X).sum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(Xt, axis=0)
    X = impute_missing(X, median)
    Xt = X[train]
    mean = Xt.mean(0)
    std = Xt.std(0)
    constant = (Xt.max(0) - Xt.min(0)) == 0
    all_missing = nan_train == train.sum()
    kept = ~constant & ~all_missing
    if standardize:
        X = standardize_columns(X, mean, std)
    reason = np.where(all_missing, "missing in every train patient", np.where(constant, "constant on train", ""))
    stats = pd.DataFrame({
        "kept": kept.astype(int), "reason": reason, "train_median": median,
        "train_mean": mean, "train_std": std, "n_missing_train": nan_train,
        "n_missing_all": nan_all,
    })
    return X, stats


# --------------------------------------------------------------------------- the stage


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
) -> dict:
    """Assemble the cohort, make folds, preprocess per fold and write OUTDIR (see module
    docstring). Returns the content of ``folds.json``."""
    if labels_from not in ("train", "all"):
        raise CMTAError(f"labels_from: {labels_from!r} must be 'train' or 'all'")
    if not 0 <= inner_val_fraction < 1:
        raise CMTAError(f"inner_val_fraction: {inner_val_fraction} must be in [0, 1)")
    if n_bins < 1:
        raise CMTAError(f"n_bins: {n_bins} must be at least 1")
    outdir = Path(outdir)
    marker = outdir / "folds.json"
    if marker.exists():
        marker.unlink()  # a crash below must not leave an old marker over new files

    families, matrix, survival, gdropped = read_genomics_dir(genomics_dir)
    no_surv = survival["survival_months"].isna() | survival["censorship"].isna()
    if no_surv.any():  # a genomics folder written with --missing-survival keep (new patients)
        gdropped = pd.concat(
            [gdropped, pd.DataFrame({"case_id": survival.index[no_surv], "reason": "no survival"})],
            ignore_index=True,
        )
        survival = survival[~no_surv].astype({"censorship": int})
    slides = read_slides(slide_sheet, tiles_summary)
    cohort, audit = assemble_cohort(survival, matrix.index, gdropped, slides)
    ids = cohort.index.to_numpy()
    times = cohort["survival_months"].to_numpy(float)
    cens = cohort["censorship"].to_numpy(int)
    event = 1 - cens

    # Held-out assignment per fold.
    index_of = {c: i for i, c in enumerate(ids)}
    fold_heldout: list[np.ndarray] = []
    fold_train: list[np.ndarray] = []
    audited = set(audit["case_id"])
    if splits is not None:
        split_list = read_split_files(splits)
        n_folds = len(split_list)
        for k, (tr, va) in enumerate(split_list):
            for name in tr + va:
                if name not in index_of and name not in audited:
                    raise CMTAError(
                        f"{Path(splits) / f'splits_{k}.csv'}: patient {name} is unknown (not in "
                        "the genomic data nor in the audit); use split files of this cohort"
                    )
            fold_train.append(np.array([index_of[c] for c in tr if c in index_of], dtype=int))
            fold_heldout.append(np.array([index_of[c] for c in va if c in index_of], dtype=int))
        split_source = str(splits)
    else:
        if n_folds < 2:
            raise CMTAError(f"n_folds: {n_folds} must be at least 2")
        strat_edges = fit_bin_edges(times, cens, n_bins)
        # event-major order: the per-fold event counts differ by at most one
        strata = np.where(event == 1, n_bins, 0) + assign_labels(times, strat_edges)
        fold_of = stratified_folds(strata, n_folds, seed)
        for k in range(n_folds):
            fold_heldout.append(np.flatnonzero(fold_of == k))
            fold_train.append(np.flatnonzero(fold_of != k))
        split_source = f"stratified by event x time bin, seed {seed}"

    all_edges = fit_bin_edges(times, cens, n_bins) if labels_from == "all" else None
    feature_names = sorted({f for feats in families.values() for f in feats})
    X_all = matrix.loc[ids, feature_names].to_numpy(np.float64)
    modality = np.array([f.rsplit("_", 1)[1] for f in feature_names])
    col_of = {f: i for i, f in enumerate(feature_names)}
    family_names = list(families)

    # Write everything but the marker.
    with atomic_output(outdir / "cohort.tsv") as tmp:
        cohort.to_csv(tmp, sep="\t")
    with atomic_output(outdir / "audit.tsv") as tmp:
        audit.to_csv(tmp, sep="\t", index=False)
    folds_root = outdir / "folds"
    if folds_root.is_dir():  # folds of an earlier run with more folds
        for d in folds_root.glob("fold_*"):
            m = re.fullmatch(r"fold_(\d+)", d.name)
            if m and int(m.group(1)) >= n_folds and d.is_dir():
                shutil.rmtree(d)

    per_fold = []
    for k in range(n_folds):
        tr, ho = fold_train[k], fold_heldout[k]
        if len(tr) == 0 or len(ho) == 0:
            raise CMTAError(f"fold {k}: {len(tr)} train and {len(ho)} held-out patients; both must be > 0")
        split = np.full(len(ids), "", dtype=object)
        split[tr] = "train"
        if inner_val_fraction > 0:
            tr_edges = fit_bin_edges(times[tr], cens[tr], n_bins)
            strata_tr = np.where(event[tr] == 1, n_bins, 0) + assign_labels(times[tr], tr_edges)
            inner = inner_split(strata_tr, inner_val_fraction, seed + 1000 + k)
            split[tr[inner]] = "inner_val"
        split[ho] = "heldout"
        rows = np.flatnonzero(split != "")
        train_mask = split[rows] == "train"
        edges = all_edges if all_edges is not None else fit_bin_edges(
            times[split == "train"], cens[split == "train"], n_bins
        )
        labels = assign_labels(times[rows], edges)
        Xk, stats = fit_transform_fold(X_all[rows], modality, train_mask, log1p_rnaseq, standardize)
        kept = stats["kept"].to_numpy(bool)
        fam_cols = []
        for name in family_names:
            cols = [col_of[f] for f in families[name] if kept[col_of[f]]]
            if not cols:
                raise CMTAError(f"fold {k}: family {name!r} has no non-constant feature on the train rows")
            fam_cols.append(cols)
        sizes = [len(c) for c in fam_cols]

        fdir = folds_root / f"fold_{k}"
        patients = pd.DataFrame({
            "case_id": ids[rows], "split": split[rows], "survival_months": times[rows],
            "censorship": cens[rows], "event": event[rows], "label": labels,
            "slide_ids": cohort["slide_ids"].to_numpy()[rows],
        })
        with atomic_output(fdir / "patients.tsv") as tmp:
            patients.to_csv(tmp, sep="\t", index=False)
        stats.insert(0, "feature", feature_names)
        stats.insert(1, "modality", modality)
        with atomic_output(fdir / "preprocessing.tsv") as tmp:
            # full precision (shortest round-trip repr): `cmta predict` re-applies these
            stats.to_csv(tmp, sep="\t", index=False)
        with atomic_output(fdir / "omics.h5") as tmp:
            with h5py.File(tmp, "w") as h5:
                h5.create_dataset("case_id", data=np.array(ids[rows], dtype=object), dtype=h5py.string_dtype())
                for i, (name, cols) in enumerate(zip(family_names, fam_cols)):
                    ds = h5.create_dataset(f"omic_{i}", data=Xk[:, cols].astype(np.float32))
                    ds.attrs["family"] = name
                    h5.create_dataset(
                        f"omic_{i}_features", data=np.array([feature_names[c] for c in cols], dtype=object),
                        dtype=h5py.string_dtype(),
                    )
        info = {
            "fold": k, "omic_sizes": sizes, "bin_edges": [float(e) for e in edges],
            "n": {s: int((split == s).sum()) for s in SPLITS},
            "n_unassigned": int(len(ids) - len(rows)),
            "n_constant_dropped": int((stats["reason"] == "constant on train").sum()),
            "n_all_missing_dropped": int((stats["reason"] == "missing in every train patient").sum()),
            "n_imputed_values": int(np.isnan(X_all[rows]).sum()),
            "event_rate": {s: float(event[split == s].mean()) if (split == s).any() else None for s in SPLITS},
        }
        write_text_atomic(fdir / "fold.json", json.dumps(info, indent=1) + "\n")
        per_fold.append(info)
        log.info("fold %d: %s, omic sizes %s", k, info["n"], sizes)

    summary = {
        "n_folds": n_folds,
        "family_names": family_names,
        "omic_sizes": [f["omic_sizes"] for f in per_fold],
        "raw_omic_sizes": [len(families[n]) for n in family_names],
        "n_bins": n_bins,
        "bin_edges": [f["bin_edges"] for f in per_fold],
        "labels_from": labels_from,
        "splits": split_source,
        "seed": seed,
        "inner_val_fraction": inner_val_fraction,
        "log1p_rnaseq": log1p_rnaseq,
        "standardize": standardize,
        "n_patients": int(len(ids)),
        "n_dropped": int(len(audit)),
        "with_slides": slides is not None,
        "genomics_dir": str(genomics_dir),
    }
    write_text_atomic(marker, json.dumps(summary, indent=1) + "\n")
    return summary


def load_fold(cohort_dir: str | os.PathLike, fold: int) -> FoldData:
    """Read fold ``fold`` of a ``cmta cohort`` output folder."""
    cohort_dir = Path(cohort_dir)
    marker = cohort_dir / "folds.json"
    if not marker.is_file():
        raise CMTAError(f"{marker}: missing; the cohort stage has not completed (run `cmta cohort`)")
    summary = json.loads(marker.read_text())
    if not 0 <= fold < summary["n_folds"]:
        raise CMTAError(f"{marker}: fold {fold} does not exist (n_folds = {summary['n_folds']})")
    fdir = cohort_dir / "folds" / f"fold_{fold}"
    info = json.loads((fdir / "fold.json").read_text())
    patients = pd.read_csv(fdir / "patients.tsv", sep="\t", dtype={"case_id": str, "slide_ids": str})
    patients["slide_ids"] = [s.split(";") if isinstance(s, str) and s else [] for s in patients["slide_ids"]]
    patients = patients.set_index("case_id")
    names = summary["family_names"]
    with h5py.File(fdir / "omics.h5", "r") as h5:
        case_ids = [c.decode() if isinstance(c, bytes) else str(c) for c in h5["case_id"][()]]
        blocks = [h5[f"omic_{i}"][()] for i in range(len(names))]
    omics = {c: [np.ascontiguousarray(b[r]) for b in blocks] for r, c in enumerate(case_ids)}
    return FoldData(
        fold=fold,
        family_names=list(names),
        omic_sizes=[int(b.shape[1]) for b in blocks],
        bin_edges=np.asarray(info["bin_edges"], dtype=float),
        patients=patients,
        omics=omics,
    )
