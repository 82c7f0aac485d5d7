"""Per-fold preprocessing of the genomic inputs: optional log1p of RNA-seq, imputation
with the train median, constant features dropped (or kept, centred with scale 1, as the
authors' ``StandardScaler``), z-scores with the train mean and standard deviation. Fitted on a fold's train rows only (:func:`fit_transform_fold`) and
re-applied from the stored statistics alone (:func:`apply_preprocessing`)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..errors import CMTAError


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


def near_constant(var: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Columns whose train variance is within float64 rounding of 0: scikit-learn's
    ``StandardScaler`` rule (Chan, Golub and LeVeque's bound), under which such a column is
    centred and given scale 1."""
    eps = np.finfo(np.float64).eps
    return var <= n * eps * var + (n * mean * eps) ** 2


def fit_transform_fold(
    X: np.ndarray, modality: np.ndarray, train: np.ndarray, log1p_rnaseq: bool, standardize: bool,
    drop_constant: bool = True,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Preprocess ``X`` (patients x features) with statistics of the ``train`` rows.

    Optional log1p of RNA-seq features, imputation of missing values with the train
    median, drop of features constant on the train rows, z-scoring with the train mean
    and standard deviation (ddof 0). ``drop_constant=False`` keeps the constant columns, as
    the authors' code does (``protocol: paper``): their stored sd is 0 (scikit-learn's
    near-constant rule, :func:`near_constant`), so they are centred (all 0), never divided
    by a rounding residue. Returns (transformed X, per-feature statistics with a ``kept``
    column). :func:`apply_preprocessing` repeats the transform from the
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
    if not drop_constant:
        kept = ~all_missing
        std = np.where(constant | near_constant(Xt.var(0), mean, len(Xt)), 0.0, std)
    if standardize:
        X = standardize_columns(X, mean, std)
    reason = np.where(all_missing, "missing in every train patient",
                      np.where(constant & ~kept, "constant on train", ""))
    stats = pd.DataFrame({
        "kept": kept.astype(int), "reason": reason, "train_median": median,
        "train_mean": mean, "train_std": std, "n_missing_train": nan_train,
        "n_missing_all": nan_all,
    })
    return X, stats
