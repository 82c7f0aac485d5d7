"""Evaluation of out-of-fold predictions: survival metrics per fold, risk groups, log-rank.

All metrics are scikit-survival's, computed per run and fold on the held-out patients:

* ``cindex_harrell``: Harrell's c-index (``concordance_index_censored``), the paper's number.
* ``cindex_uno``: Uno's IPCW c-index (``concordance_index_ipcw``), the censoring distribution
  estimated from the fold's training rows, truncated at ``tau`` (below).
* ``auc_<t>m``: cumulative/dynamic AUC at t = 12, 36, 60 months (``cumulative_dynamic_auc``),
  where the follow-up allows; skipped times are listed in the notes with the reason.
* ``ibs``: integrated Brier score (``integrated_brier_score``) of the predicted survival
  curves, on 100 times between the 10th and 90th percentiles of the fold's observed times.

Predicted survival curves are the discrete ``survival_1..T`` of ``predictions.tsv`` over
the fold's time bins ``[e_0, e_1), ..., [e_{T-1}, e_T]``: ``survival_k`` is the probability of
surviving bin k, so S(t) is a right-continuous step function, 1 before e_1 and ``survival_k``
from the end of bin k (e_k) on (no interpolation within a bin; ``survival_T`` after e_T).

IPCW needs the training censoring survival G to be positive: ``tau`` is the largest training
time with G(tau) > 0. The IPCW metrics are evaluated at times below tau only; for AUC and
Brier score held-out rows observed beyond tau are set to (tau, censored), which leaves the
value at every time below tau unchanged (they are controls there either way) and lets
scikit-survival evaluate G, which it cannot do past the last training time.

Inputs: per run and fold, ``predictions.tsv`` of ``cmta train`` (case_id, fold, risk,
survival_1..T, time, event, ...), ``summary.json`` (selection protocol, held-out count, the
fold's time-bin edges) and, when present, ``train_predictions.tsv`` (the training rows: their times and
events for the censoring distribution, their risks for the honest risk-group threshold).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .protocol import sd_ddof

REQUIRED = ("case_id", "fold", "risk", "time", "event")
#: cumulative/dynamic AUC times, months
AUC_MONTHS = (12, 36, 60)
#: metric name -> label used in tables and figures
METRICS = {
    "cindex_harrell": "Harrell's c-index",
    "cindex_uno": "Uno's IPCW c-index",
    **{f"auc_{m}m": f"cumulative/dynamic AUC at {m} months" for m in AUC_MONTHS},
    "ibs": "integrated Brier score",
}
THRESHOLDS = ("train_median", "pooled_median")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A ``predictions.tsv`` with its required columns checked."""
    path = Path(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype={"case_id": str})
    except pd.errors.EmptyDataError:
        raise CMTAError(f"{path}: no predictions (empty file)") from None
    except (OSError, ValueError) as exc:
        raise CMTAError(f"{path}: unreadable predictions ({exc})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise CMTAError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise CMTAError(f"{path}: no predictions")
    return df


def _surv(time, event):
    from sksurv.util import Surv

    return Surv.from_arrays(np.asarray(event).astype(bool), np.asarray(time, float))


def cindex(risk, time, event) -> float:
    """Harrell's c-index (sksurv), higher risk = earlier event; NaN without events."""
    from sksurv.metrics import concordance_index_censored

    event = np.asarray(event).astype(bool)
    if not event.any():
        return float("nan")
    return float(concordance_index_censored(event, np.asarray(time, float), np.asarray(risk, float))[0])


def censoring_tau(train_time, train_event) -> float:
    """The largest training time at which the censoring survival G (Kaplan-Meier of the
    censoring times, sksurv's ``CensoringDistributionEstimator``) is still positive."""
    from sksurv.nonparametric import CensoringDistributionEstimator

    est = CensoringDistributionEstimator().fit(_surv(train_time, train_event))
    positive = est.unique_time_[est.prob_ > 0]
    return float(positive.max()) if len(positive) else float(np.min(train_time))


def cindex_uno(risk, time, event, train_time, train_event) -> float:
    """Uno's IPCW c-index (sksurv ``concordance_index_ipcw``) with the censoring distribution
    of the training rows, truncated at :func:`censoring_tau`."""
    from sksurv.metrics import concordance_index_ipcw

    tau = censoring_tau(train_time, train_event)
    return float(concordance_index_ipcw(_surv(train_time, train_event), _surv(time, event),
                                        np.asarray(risk, float), tau=tau)[0])


def _clip_at(time, event, tau: float):
    """Held-out rows observed beyond ``tau`` as (tau, censored): see the module doc."""
    time, event = np.asarray(time, float).copy(), np.asarray(event).astype(bool).copy()
    beyond = time > tau
    time[beyond], event[beyond] = tau, False
    return time, event


def auc_at(months: float, risk, time, event, train_time, train_event) -> tuple[float, str]:
    """Cumulative/dynamic AUC at ``months`` (sksurv), or (NaN, reason it was skipped)."""
    from sksurv.metrics import cumulative_dynamic_auc

    time, event = np.asarray(time, float), np.asarray(event).astype(bool)
    tau = censoring_tau(train_time, train_event)
    if months >= time.max():
        return math.nan, f"beyond the held-out follow-up (last time {time.max():.1f} months)"
    if months >= tau:
        return math.nan, f"beyond the training follow-up used for IPCW ({tau:.1f} months)"
    if not ((time <= months) & event).any():
        return math.nan, "no held-out event by then"
    t, e = _clip_at(time, event, tau)
    auc, _ = cumulative_dynamic_auc(_surv(train_time, train_event), _surv(t, e),
                                    np.asarray(risk, float), [months])
    return float(auc[0]), ""


def survival_at(survival: np.ndarray, edges, times) -> np.ndarray:
    """Step-function survival (see the module doc) at ``times``.

    survival: (n, T) of ``survival_1..T``; edges: the T + 1 bin edges (months);
    returns (n, len(times)).
    """
    survival = np.asarray(survival, float)
    edges = np.asarray(edges, float)
    if len(edges) != survival.shape[1] + 1:
        raise CMTAError(f"{survival.shape[1]} survival bins but {len(edges)} bin edges")
    # number of bin ends e_1..e_T at or before t = index into [1, S_1, ..., S_T]
    k = np.searchsorted(edges[1:], np.asarray(times, float), side="right")
    padded = np.hstack([np.ones((len(survival), 1)), survival])
    return padded[:, k]


def brier_times(time, tau: float, n: int = 100) -> np.ndarray:
    """The IBS grid: ``n`` times from the 10th to the 90th percentile of the observed times,
    kept below tau and below the last observed time."""
    lo, hi = np.percentile(np.asarray(time, float), [10, 90])
    hi = min(hi, np.nextafter(tau, -np.inf), np.nextafter(np.max(time), -np.inf))
    return np.unique(np.linspace(lo, hi, n)) if hi > lo else np.array([lo])


def integrated_brier(survival, edges, time, event, train_time, train_event) -> tuple[float, str]:
    """Integrated Brier score of the step-function survival curves (sksurv), or (NaN, reason)."""
    from sksurv.metrics import integrated_brier_score

    tau = censoring_tau(train_time, train_event)
    grid = brier_times(time, tau)
    if len(grid) < 2:
        return math.nan, "follow-up too short for a time grid"
    t, e = _clip_at(time, event, tau)
    est = survival_at(survival, edges, grid)
    return float(integrated_brier_score(_surv(train_time, train_event), _surv(t, e), est, grid)), ""


def fold_metrics(pred: pd.DataFrame, train: pd.DataFrame | None, edges=None) -> tuple[dict, dict]:
    """Every metric of one held-out fold: ({metric: value}, {metric: why it is missing})."""
    out, why = {m: math.nan for m in METRICS}, {}
    n_events = int(pred["event"].sum())
    if n_events < 2:
        return out, {m: f"{n_events} held-out event(s) (at least 2 needed)" for m in METRICS}
    out["cindex_harrell"] = cindex(pred["risk"], pred["time"], pred["event"])
    ipcw = [m for m in METRICS if m != "cindex_harrell"]
    if train is None or train.empty:
        return out, {m: "no training rows (train_predictions.tsv) for the censoring distribution" for m in ipcw}
    tt, te = train["time"].to_numpy(float), train["event"].to_numpy(bool)
    if not te.any():
        return out, {m: "no training events" for m in ipcw}
    r, t, e = pred["risk"].to_numpy(float), pred["time"].to_numpy(float), pred["event"].to_numpy(bool)
    try:
        out["cindex_uno"] = cindex_uno(r, t, e, tt, te)
    except ValueError as exc:
        why["cindex_uno"] = str(exc)
    for m in AUC_MONTHS:
        try:
            out[f"auc_{m}m"], reason = auc_at(m, r, t, e, tt, te)
        except ValueError as exc:
            reason = str(exc)
        if reason:
            why[f"auc_{m}m"] = reason
    cols = sorted((c for c in pred.columns if re.fullmatch(r"survival_\d+", c)),
                  key=lambda c: int(c.split("_")[1]))
    if not cols:
        why["ibs"] = "no survival_1..T columns in the predictions"
    elif edges is None:
        why["ibs"] = "no bin_edges in summary.json (written by `cmta train` since the IBS was added)"
    else:
        try:
            out["ibs"], reason = integrated_brier(pred[cols].to_numpy(float), edges, t, e, tt, te)
        except (ValueError, CMTAError) as exc:
            reason = str(exc)
        if reason:
            why["ibs"] = reason
    return out, why


def risk_groups(pred: pd.DataFrame, thresholds: dict | None = None) -> np.ndarray:
    """High (1) / low (0) risk: above / at or below the threshold of the patient's fold.

    ``thresholds`` maps fold -> threshold (e.g. the fold's training-set median risk); folds
    absent from it (or ``thresholds=None``) are split at their held-out median risk. Each
    fold's model has its own risk scale, so the split is made within each fold.
    """
    thresholds = thresholds or {}
    groups = np.zeros(len(pred), int)
    for fold, idx in pred.groupby("fold").groups.items():
        r = pred.loc[idx, "risk"].to_numpy()
        cut = thresholds.get(fold, np.median(r))
        groups[pred.index.get_indexer(idx)] = (r > cut).astype(int)
    return groups


def logrank(time, event, groups) -> tuple[float, float]:
    """Log-rank test of the groups: (chi-square statistic, p-value); NaN with one group."""
    from sksurv.compare import compare_survival

    y = _surv(time, event)
    if len(np.unique(groups)) < 2 or not y["event"].any():
        return float("nan"), float("nan")
    chisq, p = compare_survival(y, np.asarray(groups))
    return float(chisq), float(p)


# --------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    """Everything the report shows of one run."""

    run: str
    per_fold: pd.DataFrame  # fold, n, events, <metric>... (one row per fold)
    predictions: pd.DataFrame  # pooled held-out rows, with a "group" column (1 = high risk)
    optimistic: bool
    selection: str
    threshold: str  # how the risk groups were split (a sentence)
    notes: list[str] = field(default_factory=list)  # gaps, one sentence each
    fold_notes: dict = field(default_factory=dict)  # fold -> [notes]
    reasons: dict = field(default_factory=dict)  # fold -> {metric: why it is missing}
    config_protocol: str = "honest"  # the config's protocol (summary.json), sets the sd's ddof
    optimistic_reasons: list = field(default_factory=list)
    recipe: str = "cmta"  # the training recipe(s) (summary.json "recipe"; "/"-joined if mixed)

    def mean(self, metric: str = "cindex_harrell") -> float:
        v = self.per_fold[metric].dropna()
        return float(v.mean()) if len(v) else math.nan

    @property
    def ddof(self) -> int:
        """0 (the paper's np.std) for protocol paper runs, else 1."""
        return sd_ddof(self.config_protocol)

    def sd(self, metric: str = "cindex_harrell") -> float:
        v = self.per_fold[metric].dropna()
        return float(v.std(ddof=self.ddof)) if len(v) > 1 else math.nan

    @property
    def protocol(self) -> str:
        why = "; ".join(self.optimistic_reasons) or "epoch chosen on the reported fold"
        return f"OPTIMISTIC ({why})" if self.optimistic else "honest"


def evaluate_run(run: str, prediction_files: list[str | Path], threshold: str = "train_median") -> RunResult:
    """Metrics per fold of one run and its risk groups, from its folds' ``predictions.tsv``
    (and the ``summary.json`` / ``train_predictions.tsv`` beside each).

    ``threshold``: ``train_median`` (each fold's training-set median risk; honest, default;
    the held-out fold's median where a fold has no training rows, said in the notes) or
    ``pooled_median`` (the median of all out-of-fold risks pooled, the paper's Figure 4).
    """
    if threshold not in THRESHOLDS:
        raise CMTAError(f"risk-group threshold must be one of {', '.join(THRESHOLDS)}, got {threshold!r}")
    frames, rows, notes, fold_notes, reasons = [], [], [], {}, {}
    optimistic, selections, cuts = False, set(), {}
    protocols, recipes, opt_why = set(), set(), []
    for f in sorted(map(Path, prediction_files)):
        try:
            pred = read_predictions(f)
        except CMTAError as exc:  # one bad fold must not hide the others: state it
            notes.append(f"{exc}; fold left out of every metric")
            continue
        summary = {}
        if f.with_name("summary.json").is_file():
            summary = json.loads(f.with_name("summary.json").read_text())
            optimistic |= bool(summary.get("optimistic", False))
            selections.add(str(summary.get("selection", "")))
            for key, seen in (("protocol", protocols), ("recipe", recipes)):
                seen.add(str(summary.get(key, "honest" if key == "protocol" else "cmta")))
            opt_why += [r for r in summary.get("optimistic_reasons", []) if r not in opt_why]
        bad = pred["risk"].isna() | pred["time"].isna() | pred["event"].isna()
        train = None
        tp = f.with_name("train_predictions.tsv")
        if tp.is_file():
            train = read_predictions(tp)
            train = train[train["risk"].notna()]
        edges = summary.get("bin_edges")
        for fold, part in pred[~bad].groupby("fold"):
            fold = int(fold)
            msgs = []
            if bad.any():
                msgs.append(f"{int(bad.sum())} prediction row(s) without risk, time or event left out")
            expected = (summary.get("n_patients") or {}).get("heldout")
            if expected is not None and expected > len(part) + int(bad.sum()):
                msgs.append(f"{expected - len(part) - int(bad.sum())} of {expected} held-out patients "
                            "have no prediction")
            values, why = fold_metrics(part, train, edges)
            reasons[fold] = why
            msgs += _group_reasons(why)
            rows.append({"fold": fold, "n": len(part), "events": int(part["event"].sum()), **values})
            if train is not None and len(train):
                cuts[fold] = float(np.median(train["risk"]))
            if msgs:
                fold_notes[fold] = msgs
        frames.append(pred[~bad])
    if not frames:
        raise CMTAError(f"run {run}: no usable prediction files ({'; '.join(notes) or 'none given'})")
    pred = pd.concat(frames, ignore_index=True)
    per_fold = pd.DataFrame(rows).sort_values("fold").reset_index(drop=True)
    if threshold == "pooled_median":
        groups = (pred["risk"] > pred["risk"].median()).astype(int).to_numpy()
        label = "median of the out-of-fold risks pooled over folds (the paper's; OPTIMISTIC: uses every held-out risk)"
    else:
        groups = risk_groups(pred, cuts)
        label = "each fold's training-set median risk"
        lacking = sorted(set(per_fold["fold"]) - set(cuts))
        if lacking:
            label += f" (held-out median for fold(s) {', '.join(map(str, lacking))}: no training rows)"
    pred = pred.assign(group=groups)
    for g, name in ((0, "low"), (1, "high")):
        if not (groups == g).any():
            notes.append(f"the {name}-risk group is empty: no log-rank test")
    for fold, msgs in sorted(fold_notes.items()):
        notes += [f"fold {fold}: {m}" for m in msgs]
    if len(protocols) > 1:
        notes.append(f"folds of protocols {', '.join(sorted(protocols))}: sd with ddof 1")
    return RunResult(run, per_fold, pred, optimistic, "/".join(sorted(selections)), label, notes,
                     fold_notes, reasons, protocols.pop() if len(protocols) == 1 else "honest", opt_why,
                     "/".join(sorted(recipes)) or "cmta")


def metrics_long(results: list[RunResult]) -> pd.DataFrame:
    """``metrics.tsv``: run, fold, metric, value, note (one row per run x fold x metric)."""
    rows = []
    for res in results:
        for _, r in res.per_fold.iterrows():
            why = res.reasons.get(int(r["fold"]), {})
            for m in METRICS:
                note = why.get(m, "") if math.isnan(r[m]) else ""
                rows.append({"run": res.run, "fold": int(r["fold"]), "metric": m, "value": r[m], "note": note})
    return pd.DataFrame(rows, columns=["run", "fold", "metric", "value", "note"])


def _group_reasons(why: dict) -> list[str]:
    """{metric: reason} as sentences, metrics sharing a reason named together."""
    by_reason: dict[str, list[str]] = {}
    for m, r in why.items():
        by_reason.setdefault(r, []).append(m)
    return [f"{', '.join(ms)} not computed: {r}" for r, ms in by_reason.items()]


def metrics_summary(results: list[RunResult]) -> pd.DataFrame:
    """``metrics_summary.tsv``: run, protocol, selection, metric, label, mean, sd, folds (with a
    value), sd_ddof (0: the paper's np.std, protocol paper; 1 otherwise), recipe."""
    rows = []
    for res in results:
        for m, label in METRICS.items():
            rows.append({"run": res.run, "protocol": "optimistic" if res.optimistic else "honest",
                         "selection": res.selection, "metric": m, "label": label,
                         "mean": res.mean(m), "sd": res.sd(m),
                         "folds": int(res.per_fold[m].notna().sum()),
                         "sd_ddof": res.ddof, "recipe": res.recipe})
    return pd.DataFrame(rows)
