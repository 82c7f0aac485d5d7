"""Evaluation of out-of-fold predictions: c-index per fold, Kaplan-Meier curves of risk
groups and the log-rank test, all through scikit-survival.

Inputs are the ``predictions.tsv`` files of ``cmta train`` (one per run and fold: case_id,
fold, risk, time, event, ...) and their ``summary.json`` (selection protocol, and whether
it was the optimistic best-epoch-on-the-reported-fold protocol).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CMTAError

REQUIRED = ("case_id", "fold", "risk", "time", "event")


def read_predictions(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype={"case_id": str})
    except (OSError, ValueError) as exc:
        raise CMTAError(f"{path}: unreadable predictions ({exc})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise CMTAError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise CMTAError(f"{path}: no predictions")
    return df


def cindex(risk, time, event) -> float:
    """Harrell's c-index (sksurv), higher risk = earlier event."""
    from sksurv.metrics import concordance_index_censored

    event = np.asarray(event).astype(bool)
    if not event.any():
        return float("nan")
    return float(concordance_index_censored(event, np.asarray(time, float), np.asarray(risk, float))[0])


def risk_groups(pred: pd.DataFrame) -> np.ndarray:
    """High (1) / low (0) risk, split at the median risk of each held-out fold.

    Each fold's model has its own risk scale, so the split is made within each fold (on
    held-out risks only, no outcome used) and the groups are then pooled.
    """
    groups = np.zeros(len(pred), int)
    for _, idx in pred.groupby("fold").groups.items():
        r = pred.loc[idx, "risk"].to_numpy()
        groups[pred.index.get_indexer(idx)] = (r > np.median(r)).astype(int)
    return groups


def logrank(time, event, groups) -> tuple[float, float]:
    """Log-rank test of the groups: (chi-square statistic, p-value)."""
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    y = Surv.from_arrays(np.asarray(event).astype(bool), np.asarray(time, float))
    if len(np.unique(groups)) < 2 or not y["event"].any():
        return float("nan"), float("nan")
    chisq, p = compare_survival(y, np.asarray(groups))
    return float(chisq), float(p)


@dataclass
class RunResult:
    run: str
    per_fold: pd.DataFrame  # fold, n, events, cindex
    predictions: pd.DataFrame
    optimistic: bool
    selection: str

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.per_fold["cindex"]))

    @property
    def sd(self) -> float:
        return float(np.nanstd(self.per_fold["cindex"], ddof=1)) if len(self.per_fold) > 1 else float("nan")


def evaluate_run(run: str, prediction_files: list[str | Path]) -> RunResult:
    """C-index per fold of one run, from its folds' predictions (and summaries beside them)."""
    frames, rows, optimistic, selections = [], [], False, set()
    for f in sorted(map(Path, prediction_files)):
        pred = read_predictions(f)
        frames.append(pred)
        for fold, part in pred.groupby("fold"):
            rows.append({
                "fold": int(fold), "n": len(part), "events": int(part["event"].sum()),
                "cindex": cindex(part["risk"], part["time"], part["event"]),
            })
        summary = f.with_name("summary.json")
        if summary.is_file():
            s = json.loads(summary.read_text())
            optimistic |= bool(s.get("optimistic", False))
            selections.add(str(s.get("selection", "")))
    if not frames:
        raise CMTAError(f"run {run}: no prediction files")
    pred = pd.concat(frames, ignore_index=True)
    return RunResult(run, pd.DataFrame(rows).sort_values("fold"), pred, optimistic, "/".join(sorted(selections)))


def plot_km(result: RunResult, path: str | Path) -> tuple[float, float]:
    """Kaplan-Meier curves of the low- and high-risk groups, with the log-rank p-value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sksurv.nonparametric import kaplan_meier_estimator

    pred = result.predictions.reset_index(drop=True)
    groups = risk_groups(pred)
    chisq, p = logrank(pred["time"], pred["event"], groups)
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    for g, label, colour in ((0, "low risk", "tab:blue"), (1, "high risk", "tab:red")):
        sel = groups == g
        if sel.sum() == 0:
            continue
        t, s = kaplan_meier_estimator(pred["event"][sel].astype(bool).to_numpy(), pred["time"][sel].to_numpy(float))
        ax.step(np.r_[0, t], np.r_[1, s], where="post", color=colour, label=f"{label} (n={sel.sum()})")
    title = f"{result.run}: c-index {result.mean:.3f}, log-rank p = {p:.2g}"
    if result.optimistic:
        title += "\n(OPTIMISTIC: epoch chosen on the reported fold)"
    ax.set(title=title, xlabel="months", ylabel="survival probability", ylim=(0, 1.02))
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return chisq, p
