"""``coxnet``: the linear floor of every table, an elastic-net Cox model (scikit-survival's
``CoxnetSurvivalAnalysis``) on the inputs of the networks' genomic arm.

Per fold: the fold's preprocessed genomic features (the six families of ``cmta cohort``,
standardized with the fold's training rows, concatenated), fitted on the fold's training
rows only. The penalty is chosen without the held-out fold: the regularization path
(``n_alphas`` values, ``l1_ratio`` 0.5) is computed on the training rows, and the alpha
with the best mean Harrell's c-index over ``inner_folds`` inner folds of the training rows
(seeded, stratified by event) is refitted on all of them; ties go to the larger alpha.
Deterministic: the same fold gives the same risks.

Outputs are those of the networks (``cmta_pipeline.training.fold``): ``predictions.tsv``
and ``train_predictions.tsv`` with ``risk`` (the linear predictor), ``hazard_1..T`` and
``survival_1..T`` at the fold's bin edges (from the Breslow baseline), ``epochs.tsv`` (one
row), ``model.pt`` (coefficients, alpha; no network) and ``summary.json`` last.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from ..fileio import atomic_output, fresh_outputs, write_text_atomic
from .metrics import write_risks

log = logging.getLogger(__name__)

OUTPUTS = ("model.pt", "epochs.tsv", "predictions.tsv", "train_predictions.tsv", "summary.json")


@dataclass(frozen=True)
class CoxnetSettings:
    """How the elastic-net Cox model is fitted (docs/models.md, "coxnet")."""

    l1_ratio: float = 0.5
    n_alphas: int = 30
    alpha_min_ratio: float = 0.05
    inner_folds: int = 5
    seed: int = 1
    max_iter: int = 100000


def _surv(time_, event):
    from sksurv.util import Surv

    return Surv.from_arrays(np.asarray(event, bool), np.asarray(time_, float))


def design(fd) -> tuple[np.ndarray, pd.DataFrame]:
    """(X: one row per patient, the families' features side by side; the patients)."""
    pats = fd.patients
    missing = [c for c in pats.index if c not in fd.omics]
    if missing:
        raise CMTAError(f"fold {fd.fold}: no genomic profile for {missing[0]} (coxnet reads genomics)")
    X = np.stack([np.concatenate([np.asarray(a, float) for a in fd.omics[c]]) for c in pats.index])
    return np.nan_to_num(X), pats


def _model(s: CoxnetSettings, alphas=None, baseline: bool = False):
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    return CoxnetSurvivalAnalysis(l1_ratio=s.l1_ratio, n_alphas=s.n_alphas, alpha_min_ratio=s.alpha_min_ratio,
                                  alphas=alphas, max_iter=s.max_iter, fit_baseline_model=baseline)


def _quiet_fit(model, X, y):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        return model.fit(X, y)


def choose_alpha(X: np.ndarray, y, s: CoxnetSettings) -> tuple[float, np.ndarray, np.ndarray]:
    """(chosen alpha, the path's alphas, mean inner c-index per alpha), from ``X``, ``y``
    (training rows) alone."""
    from sklearn.model_selection import StratifiedKFold
    from sksurv.exceptions import NoComparablePairException
    from sksurv.metrics import concordance_index_censored

    alphas = _quiet_fit(_model(s), X, y).alphas_
    event = y["event"]
    k = max(2, min(s.inner_folds, int(event.sum()), int((~event).sum()) or s.inner_folds))
    scores = np.full((k, len(alphas)), np.nan)
    if len(event) < 2 * k:  # too few rows for inner folds of 2 or more: the null model
        log.warning("coxnet: %d training rows, too few for %d inner folds: the largest penalty "
                    "(no gene) is taken", len(event), k)
        return float(alphas[0]), np.asarray(alphas), np.full(len(alphas), np.nan)
    split = StratifiedKFold(n_splits=k, shuffle=True, random_state=s.seed)
    for i, (tr, va) in enumerate(split.split(X, event)):
        if len(tr) < 2 or not event[tr].any():
            continue  # an inner training part Cox cannot fit: this inner fold gives no score
        m = _quiet_fit(_model(s, alphas), X[tr], y[tr])
        for j, a in enumerate(m.alphas_):
            if not event[va].any():
                scores[i, j] = np.nan
                continue
            risk = m.predict(X[va], alpha=a)
            try:
                scores[i, j] = concordance_index_censored(event[va], y["time"][va], risk)[0]
            except NoComparablePairException:  # stays NaN: this inner fold scores nothing
                pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: no inner score
        mean = np.nanmean(scores, axis=0)
    if np.isnan(mean).all():
        log.warning("coxnet: no inner fold could be scored: the largest penalty (no gene) is taken")
        return float(alphas[0]), np.asarray(alphas), mean
    best = int(np.flatnonzero(mean >= np.nanmax(mean) - 1e-12)[0])  # alphas_ descend: the largest
    return float(alphas[best]), np.asarray(alphas), mean


def fit_coxnet(X: np.ndarray, y, s: CoxnetSettings | None = None):
    """(the fitted model on the whole path with a baseline, the chosen alpha, path alphas,
    inner c-index per alpha)."""
    s = s or CoxnetSettings()
    alpha, alphas, scores = choose_alpha(X, y, s)
    model = _quiet_fit(_model(s, alphas, baseline=True), X, y)
    return model, alpha, alphas, scores


def curves(model, alpha: float, X: np.ndarray, edges) -> np.ndarray:
    """S(e_1..e_T) per row (the Breslow estimate as a step function; 1 before the first
    training event)."""
    surv = model.predict_survival_function(X, alpha=alpha, return_array=True)
    times = np.asarray(model.unique_times_, float)
    at = np.searchsorted(times, np.asarray(edges[1:], float), side="right") - 1
    out = np.where(at >= 0, surv[:, np.clip(at, 0, None)], 1.0)
    return np.clip(out, 0.0, 1.0)


def prediction_table(model, alpha: float, X: np.ndarray, pats: pd.DataFrame, fold: int, edges) -> pd.DataFrame:
    """The networks' predictions.tsv columns for these patients."""
    surv = curves(model, alpha, X, edges)
    prev = np.hstack([np.ones((len(surv), 1)), surv[:, :-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        haz = np.where(prev > 0, 1.0 - surv / prev, 1.0)
    df = pd.DataFrame({"case_id": pats.index.astype(str), "fold": int(fold),
                       "risk": model.predict(X, alpha=alpha)})
    for k in range(surv.shape[1]):
        df[f"hazard_{k + 1}"] = haz[:, k]
    for k in range(surv.shape[1]):
        df[f"survival_{k + 1}"] = surv[:, k]
    df["time"] = pats["survival_months"].to_numpy(float)
    df["event"] = 1 - pats["censorship"].to_numpy(int)
    df["censorship"] = pats["censorship"].to_numpy(int)
    df["label"] = pats["label"].to_numpy(int)
    return df


def _cindex(df: pd.DataFrame) -> float:
    from sksurv.metrics import concordance_index_censored

    if df.empty or not df["event"].astype(bool).any():
        return math.nan
    return float(concordance_index_censored(df["event"].astype(bool).to_numpy(), df["time"].to_numpy(float),
                                            df["risk"].to_numpy(float))[0])


def run_coxnet_fold(cohort_dir: str | os.PathLike, fold: int, outdir: str | os.PathLike,
                    settings: CoxnetSettings | None = None) -> dict:
    """Fit coxnet on fold ``fold`` of a cohort folder and write the run's files; returns
    the summary."""
    from ..cohort.files import load_fold

    s = settings or CoxnetSettings()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    with fresh_outputs(outdir, OUTPUTS, marker="summary.json"):
        t0 = time.perf_counter()
        fd = load_fold(cohort_dir, fold)
        X, pats = design(fd)
        split = pats["split"].astype(str).to_numpy()
        tr = split == "train"
        if tr.sum() < 2 or (1 - pats.loc[tr, "censorship"]).sum() < 1:
            raise CMTAError(f"{cohort_dir}: fold {fold} has too few training patients or events for coxnet")
        y = _surv(pats.loc[tr, "survival_months"], 1 - pats.loc[tr, "censorship"])
        model, alpha, alphas, scores = fit_coxnet(X[tr], y, s)
        tables = {name: prediction_table(model, alpha, X[split == name], pats[split == name], fold, fd.bin_edges)
                  for name in dict.fromkeys(split)}
        held = tables.get("heldout", tables["train"].iloc[:0])
        metrics = {f"{k}_cindex": _cindex(v) for k, v in tables.items()}
        _write(outdir, model, alpha, s, fd, tables["train"], held, metrics, time.perf_counter() - t0)
        coef = model.coef_[:, list(alphas).index(alpha)]
        summary = {
            "fold": int(fold), "model": "coxnet", "recipe": "coxnet", "selection": "inner_cv",
            "optimistic": False, "selected_epoch": 1, "epochs_run": 1,
            "metrics": {k: (None if math.isnan(v) else round(v, 6)) for k, v in metrics.items()},
            "n_patients": {k: len(v) for k, v in tables.items()},
            "n_left_out_without_slides": 0, "omic_sizes": list(map(int, fd.omic_sizes)), "path_dim": 0,
            "bin_edges": [float(e) for e in np.asarray(fd.bin_edges)],
            "coxnet": {**asdict(s), "alpha": alpha, "nonzero": int(np.count_nonzero(coef)),
                       "inner_cindex": (None if np.isnan(scores).all() else round(float(np.nanmax(scores)), 6))},
            "seed": s.seed, "device": "cpu", "seconds": round(time.perf_counter() - t0, 1),
        }
        write_text_atomic(outdir / "summary.json", json.dumps(summary, indent=2) + "\n")
        log.info("fold %d coxnet: alpha %.4g (%d of %d features), held-out c-index %s", fold, alpha,
                 summary["coxnet"]["nonzero"], X.shape[1], summary["metrics"].get("heldout_cindex"))
        return summary


def _write(outdir: Path, model, alpha, s, fd, train: pd.DataFrame, held: pd.DataFrame, metrics, seconds) -> None:
    import torch

    j = list(model.alphas_).index(alpha)
    ckpt = {"model": {"name": "coxnet", "omic_sizes": list(map(int, fd.omic_sizes))},
            "coef": torch.tensor(model.coef_[:, j], dtype=torch.float64), "alpha": float(alpha),
            "settings": asdict(s), "fold": int(fd.fold), "family_names": list(fd.family_names),
            "bin_edges": [float(e) for e in np.asarray(fd.bin_edges)], "selection": "inner_cv",
            "optimistic": False}
    with atomic_output(outdir / "model.pt") as tmp:
        torch.save(ckpt, tmp)
    row = {"epoch": 1, "selected": 1, **metrics, "seconds": round(seconds, 2)}
    with atomic_output(outdir / "epochs.tsv") as tmp:
        pd.DataFrame([row]).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    for name, df in (("predictions.tsv", held), ("train_predictions.tsv", train)):
        write_risks(df, outdir / name)
