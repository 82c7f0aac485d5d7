"""Paired comparison of two runs on the same held-out patients: the difference of their
Harrell's c-indices with a bootstrap 95 % interval.

The c-index of a run is computed per fold on its held-out patients and averaged over folds,
as in Table 1. The difference ``run_a - run_b`` uses the patients both runs predicted
(joined on fold and case_id). The interval: ``n_boot`` resamples (seeded), each drawing
patients with replacement within each fold (stratified by fold: every fold keeps its
size), the same draw for both runs (paired); the 2.5th and 97.5th percentiles of the
resampled differences. An interval that includes zero is reported as "no detectable
difference".

Which pairs (:func:`comparison_pairs`): within each encoder, CMTA against each other run
(the runs that read no slides included), or every pair without CMTA; then, with several
encoders, each run against itself on every other encoder, on the same held-out patients.

Harrell's c-index is scikit-survival's (``concordance_index_censored``): patient i with an
event is comparable with j when t_j > t_i, or t_j = t_i and j is censored; a pair counts
1 when risk_i > risk_j and 0.5 on tied risks. Here it is written as pair matrices so that
a thousand resamples cost one matrix product per fold (equal to sksurv's: tested).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

PAIRED_COLUMNS = ["cohort", "run_a", "encoder_a", "run_b", "encoder_b", "n_patients", "diff", "ci_low", "ci_high", "n_boot",
                  "includes_zero"]


def pair_matrices(time, event, risk) -> tuple[np.ndarray, np.ndarray]:
    """(comparable[i, j], score[i, j]) of Harrell's c-index (see the module doc)."""
    t = np.asarray(time, float)
    e = np.asarray(event).astype(bool)
    r = np.asarray(risk, float)
    comp = e[:, None] & ((t[None, :] > t[:, None]) | ((t[None, :] == t[:, None]) & ~e[None, :]))
    score = (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])
    return comp.astype(float), comp * score


def weighted_cindex(comp: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """c-index of each row of ``weights`` (how often each patient is drawn); NaN when a
    draw has no comparable pair."""
    w = np.atleast_2d(weights).astype(float)
    den = np.einsum("bi,ij,bj->b", w, comp, w)
    num = np.einsum("bi,ij,bj->b", w, score, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _fold_mean(values: np.ndarray) -> np.ndarray:
    """Mean over folds (axis 1), ignoring folds without a value."""
    with np.errstate(invalid="ignore"):
        ok = ~np.isnan(values)
        n = ok.sum(axis=1)
        return np.where(n > 0, np.where(ok, values, 0).sum(axis=1) / np.maximum(n, 1), np.nan)


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 1000, seed: int = 1) -> dict:
    """``a``, ``b``: held-out rows (fold, case_id, risk, time, event) of two runs.
    Returns n_patients, diff, ci_low, ci_high, n_boot, includes_zero."""
    both = a[["fold", "case_id", "risk", "time", "event"]].merge(
        b[["fold", "case_id", "risk"]], on=["fold", "case_id"], suffixes=("_a", "_b"))
    both = both.dropna(subset=["risk_a", "risk_b", "time", "event"]).sort_values(["fold", "case_id"])
    rng = np.random.default_rng(seed)
    point, boot = [], []
    for _, part in both.groupby("fold", sort=True):
        ca, sa = pair_matrices(part["time"], part["event"], part["risk_a"])
        _, sb = pair_matrices(part["time"], part["event"], part["risk_b"])
        n = len(part)
        ones = np.ones((1, n))
        point.append((weighted_cindex(ca, sa, ones)[0], weighted_cindex(ca, sb, ones)[0]))
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
        boot.append((weighted_cindex(ca, sa, w), weighted_cindex(ca, sb, w)))
    if not point:
        return {"n_patients": 0, "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "n_boot": int(n_boot), "includes_zero": True}
    pa, pb = np.array(point).T
    diff = float(_fold_mean(pa[None, :])[0] - _fold_mean(pb[None, :])[0])
    ba = np.stack([x[0] for x in boot], axis=1)
    bb = np.stack([x[1] for x in boot], axis=1)
    d = _fold_mean(ba) - _fold_mean(bb)
    d = d[~np.isnan(d)]
    lo, hi = (np.percentile(d, [2.5, 97.5]) if len(d) else (math.nan, math.nan))
    return {"n_patients": int(len(both)), "diff": diff, "ci_low": float(lo), "ci_high": float(hi),
            "n_boot": int(n_boot), "includes_zero": bool(not (lo > 0 or hi < 0))}


def run_pairs(runs: list[str], reference: str = "cmta") -> list[tuple[str, str]]:
    """``reference`` against each other run when it is among ``runs``; else every pair."""
    if reference in runs:
        return [(reference, r) for r in runs if r != reference]
    return list(itertools.combinations(runs, 2))


#: encoder names that are no encoder: a model that reads no slides, or one not recorded
NO_ENCODER = ("", "none")


def comparison_pairs(keys: list[tuple[str, str]]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Pairs of (run, encoder) ``keys`` to compare (module doc): :func:`run_pairs` within
    each encoder (with the runs of no encoder), then each run across its encoders."""
    encoders = list(dict.fromkeys(e for _, e in keys if e not in NO_ENCODER))
    pairs = []
    for enc in encoders or [None]:
        group = {r: (r, e) for r, e in keys if enc is None or e in (enc, *NO_ENCODER)}
        pairs += [(group[a], group[b]) for a, b in run_pairs(list(group))]
    for run in dict.fromkeys(r for r, _ in keys):
        mine = [(r, e) for r, e in keys if r == run and e not in NO_ENCODER]
        pairs += list(itertools.combinations(mine, 2))
    return list(dict.fromkeys(pairs))


def by_run_encoder(predictions: dict) -> dict:
    """``predictions`` keyed by (run, encoder): a plain run key gets the encoder ``""``."""
    return {k if isinstance(k, tuple) else (k, ""): v for k, v in predictions.items()}


def paired_table(cohort: str, predictions: dict, n_boot: int = 1000, seed: int = 1) -> pd.DataFrame:
    """One row per pair of runs of one cohort (:data:`PAIRED_COLUMNS`); ``predictions`` is
    keyed by run or by (run, encoder)."""
    preds = by_run_encoder(predictions)
    rows = [{"cohort": cohort, "run_a": a[0], "encoder_a": a[1], "run_b": b[0], "encoder_b": b[1],
             **paired_difference(preds[a], preds[b], n_boot, seed)}
            for a, b in comparison_pairs(list(preds))]
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _name(row, side: str, with_encoder: bool) -> str:
    run, enc = row[f"run_{side}"], row.get(f"encoder_{side}", "")
    enc = "" if not isinstance(enc, str) or enc in NO_ENCODER else enc
    return f"{run}@{enc}" if with_encoder and enc else str(run)


def sentence(row, with_encoder: bool = False) -> str:
    """One line of the report for one paired comparison (runs named with their encoder
    when ``with_encoder``: a table of several encoders)."""
    a, b = _name(row, "a", with_encoder), _name(row, "b", with_encoder)
    head = (f"{row['cohort']}: {a} - {b} = {row['diff']:+.3f} "
            f"(95% CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}, {row['n_patients']} patients, "
            f"{row['n_boot']} resamples)")
    if row["includes_zero"]:
        return f"{head}: the interval includes zero: no detectable difference."
    better = a if row["diff"] > 0 else b
    return f"{head}: the interval excludes zero: {better} ranks these patients better."


def _scheme_cindex(pred: pd.DataFrame, index: dict, weights: np.ndarray) -> np.ndarray:
    """Mean over ``pred``'s folds of the weighted c-index (one value per row of weights)."""
    per_fold = []
    for _, part in pred.groupby("fold", sort=True):
        comp, score = pair_matrices(part["time"], part["event"], part["risk"])
        per_fold.append(weighted_cindex(comp, score, weights[:, [index[c] for c in part["case_id"]]]))
    return _fold_mean(np.stack(per_fold, axis=1))


def split_difference(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 1000, seed: int = 1) -> dict:
    """One run's held-out rows under two fold schemes of the same patients (random and
    site-preserved folds): the difference of the Table 1 c-indices (per fold, averaged over
    folds) with a paired bootstrap interval. Each resample draws the patients with
    replacement over the whole cohort (folds differ between the schemes, so the draw is not
    stratified by fold) and gives every patient the same weight in both schemes."""
    cols = ["fold", "case_id", "risk", "time", "event"]
    a = a[cols].dropna()
    b = b[cols].dropna()
    common = sorted(set(a["case_id"]) & set(b["case_id"]))
    a, b = a[a["case_id"].isin(common)], b[b["case_id"].isin(common)]
    if not common:
        return {"n_patients": 0, "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "n_boot": int(n_boot), "includes_zero": True}
    index = {c: i for i, c in enumerate(common)}
    n = len(common)
    diff = float((_scheme_cindex(a, index, np.ones((1, n))) - _scheme_cindex(b, index, np.ones((1, n))))[0])
    w = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    d = _scheme_cindex(a, index, w) - _scheme_cindex(b, index, w)
    d = d[~np.isnan(d)]
    lo, hi = (np.percentile(d, [2.5, 97.5]) if len(d) else (math.nan, math.nan))
    return {"n_patients": n, "diff": diff, "ci_low": float(lo), "ci_high": float(hi),
            "n_boot": int(n_boot), "includes_zero": bool(not (lo > 0 or hi < 0))}


def split_pairs(predictions: dict[str, dict[str, pd.DataFrame]], n_boot: int = 1000, seed: int = 1,
                schemes: dict[str, str] | None = None) -> pd.DataFrame:
    """``predictions``: cohort -> run (or (run, encoder)) -> held-out rows; ``schemes``: cohort -> how its folds
    were made (``split_by``). Every two cohorts of the same patients under different fold
    schemes (random and site-preserved folds of one cohort) give, per run they share, a row
    ``cohort`` ``<c1> vs <c2>``, ``run_a`` ``<run>@<c1>``, ``run_b`` ``<run>@<c2>``
    (:func:`split_difference`)."""
    schemes = schemes or {}
    rows = []
    patients = {c: set().union(*(set(p["case_id"]) for p in runs.values())) for c, runs in predictions.items()}
    for c1, c2 in itertools.combinations(predictions, 2):
        if patients[c1] != patients[c2] or schemes.get(c1, "") == schemes.get(c2, ""):
            continue
        p1, p2 = by_run_encoder(predictions[c1]), by_run_encoder(predictions[c2])
        for run, enc in [k for k in p1 if k in p2]:
            rows.append({"cohort": f"{c1} vs {c2}", "run_a": f"{run}@{c1}", "encoder_a": enc,
                         "run_b": f"{run}@{c2}", "encoder_b": enc,
                         **split_difference(p1[(run, enc)], p2[(run, enc)], n_boot, seed)})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)
