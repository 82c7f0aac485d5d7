"""Report figures: Kaplan-Meier curves as journals print them, per-fold metrics per model,
and the cross-cohort comparison. Each figure is saved as PNG and SVG (atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import atomic_output

GROUPS = ((0, "low risk", "tab:blue"), (1, "high risk", "tab:red"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, stem: str | Path, formats=("png", "svg")) -> list[Path]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.svg``; returns the paths."""
    paths = []
    for ext in formats:
        path = Path(f"{stem}.{ext}")
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150 if ext == "png" else None)
        paths.append(path)
    _plt().close(fig)
    return paths


def at_risk(time, ticks) -> list[int]:
    """Numbers at risk (observed time >= t) at each tick."""
    time = np.asarray(time, float)
    return [int((time >= t).sum()) for t in ticks]


def plot_km(pred: pd.DataFrame, title: str, stem: str | Path, chisq: float, p: float,
            subtitle: str = "") -> list[Path]:
    """Kaplan-Meier curves of the risk groups in ``pred["group"]`` (0 low, 1 high):
    95% pointwise log-log confidence bands, censoring ticks, the log-rank chi-square and p,
    and a numbers-at-risk table under the time axis. Writes ``<stem>.png`` and ``.svg``."""
    plt = _plt()
    from sksurv.nonparametric import kaplan_meier_estimator

    tmax = float(pred["time"].max()) if len(pred) else 1.0
    step = next(s for s in (3, 6, 12, 24, 36, 60, 120, 240) if tmax / s <= 8)
    ticks = np.arange(0, tmax + 1e-9, step)
    fig = plt.figure(figsize=(6.4, 5.2))
    ax = fig.add_axes([0.14, 0.34, 0.82, 0.56])
    table = fig.add_axes([0.14, 0.05, 0.82, 0.16], sharex=ax)
    shown = []
    for g, label, colour in GROUPS:
        sel = (pred["group"] == g).to_numpy()
        if not sel.any():
            continue
        ev = pred["event"].to_numpy(bool)[sel]
        t = pred["time"].to_numpy(float)[sel]
        times, surv, ci = kaplan_meier_estimator(ev, t, conf_type="log-log")
        x = np.r_[0, times]
        ax.step(x, np.r_[1, surv], where="post", color=colour, label=f"{label} (n={sel.sum()}, {ev.sum()} events)")
        ax.fill_between(x, np.r_[1, ci[0]], np.r_[1, ci[1]], step="post", color=colour, alpha=0.15, lw=0)
        cens = t[~ev]
        ax.plot(cens, np.interp(cens, x, np.r_[1, surv], right=surv[-1]) if len(cens) else cens,
                "|", color=colour, ms=6)
        shown.append((label, colour, at_risk(t, ticks)))
    stat = "log-rank: one group only" if math.isnan(p) else f"log-rank $\\chi^2$ = {chisq:.2f}, p = {p:.3g}"
    ax.text(0.98, 0.97, stat, transform=ax.transAxes, ha="right", va="top")
    ax.set(ylim=(0, 1.03), xlim=(0, ticks[-1] + step * 0.02 if len(ticks) > 1 else tmax),
           ylabel="survival probability", xlabel="months", xticks=ticks)
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    table.set_title("number at risk", loc="left", fontsize=9)
    table.axis("off")
    for row, (label, colour, counts) in enumerate(shown):
        y = 0.75 - 0.5 * row
        table.text(-0.05, y, label, color=colour, ha="right", va="center", fontsize=8,
                   transform=table.get_yaxis_transform())
        for t, n in zip(ticks, counts):
            table.text(t, y, str(n), ha="center", va="center", fontsize=8)
    table.set_ylim(0, 1)
    return save_figure(fig, stem)


def plot_per_fold(per_fold: pd.DataFrame, metric: str, label: str, stem: str | Path) -> list[Path]:
    """Per-fold values of ``metric`` per run (points) with mean +- sd (bar and whisker).

    per_fold: columns run, fold, protocol, <metric>. Optimistic runs are drawn hollow."""
    plt = _plt()
    runs = list(dict.fromkeys(per_fold["run"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(runs) + 1.5), 3.8))
    rng = np.random.default_rng(0)
    for i, run in enumerate(runs):
        part = per_fold[per_fold["run"] == run]
        v = part[metric].dropna().to_numpy(float)
        optimistic = str(part["protocol"].iloc[0]).startswith("OPTIMISTIC")
        if len(v):
            ax.errorbar(i, v.mean(), yerr=v.std(ddof=int(part["ddof"].iloc[0]) if "ddof" in part else 1) if len(v) > 1 else 0, fmt="_", color="k",
                        ms=18, capsize=4, zorder=1)
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=22, zorder=2,
                       facecolors="none" if optimistic else "tab:blue", edgecolors="tab:blue")
    ax.set_xticks(range(len(runs)),
                  [r + ("\n(optimistic)" if str(per_fold.loc[per_fold.run == r, "protocol"].iloc[0]).startswith("OPTIMISTIC") else "")
                   for r in runs], fontsize=8)
    if metric.startswith("cindex") or metric.startswith("auc"):
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(ylabel=label)
    ax.set_title(f"{label} per held-out fold (points),\nmean $\\pm$ sd", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_comparison(table: pd.DataFrame, label: str, stem: str | Path) -> list[Path]:
    """Grouped bars of mean +- sd per row (model, protocol) and cohort.

    table: columns cohort, row, protocol, mean, sd. Optimistic rows are hatched."""
    plt = _plt()
    cohorts = list(dict.fromkeys(table["cohort"]))
    rows = list(dict.fromkeys(table["row"]))
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(cohorts) + 2), 4))
    colours = plt.get_cmap("tab10")
    for j, row in enumerate(rows):
        part = table[table["row"] == row].set_index("cohort").reindex(cohorts)
        hatch = "//" if (part["protocol"] == "optimistic").any() else None
        ax.bar(np.arange(len(cohorts)) + (j - (len(rows) - 1) / 2) * width, part["mean"],
               width, yerr=part["sd"].fillna(0), capsize=3, label=row, color=colours(j % 10),
               hatch=hatch, edgecolor="k", lw=0.5)
    ax.set_xticks(range(len(cohorts)), cohorts)
    low = np.nanmin(table["mean"] - table["sd"].fillna(0)) if len(table) else 0.5
    ax.set_ylim(min(0.4, low - 0.05), None)
    ax.set(ylabel=label)
    ax.set_title(f"{label}: mean $\\pm$ sd over folds\n(hatched: optimistic protocol)", fontsize=10)
    ax.legend(fontsize=8, ncols=2, frameon=False)
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_heat_table(table: pd.DataFrame, label: str, stem: str | Path) -> list[Path]:
    """Models x cohorts heat table of ``mean`` (cells annotated mean ± sd), one panel per
    protocol (honest and paper never share one). table: cohort, row, protocol, mean, sd."""
    plt = _plt()
    protocols = list(dict.fromkeys(table["protocol"])) or ["honest"]
    cohorts = list(dict.fromkeys(table["cohort"]))
    heights = [max(1, table.loc[table.protocol == p, "row"].nunique()) for p in protocols]
    fig, axes = plt.subplots(len(protocols), 1, squeeze=False, height_ratios=heights,
                             figsize=(max(4.5, 1.5 * len(cohorts) + 2.5), 1.2 + 0.45 * sum(heights)))
    for ax, p in zip(axes[:, 0], protocols):
        part = table[table["protocol"] == p]
        rows = list(dict.fromkeys(part["row"]))
        grid = part.pivot(index="row", columns="cohort", values="mean").reindex(index=rows, columns=cohorts)
        sd = part.pivot(index="row", columns="cohort", values="sd").reindex(index=rows, columns=cohorts)
        ax.imshow(grid.to_numpy(float), cmap="viridis", vmin=0.5, vmax=max(0.75, np.nanmax(grid.to_numpy(float))),
                  aspect="auto")
        for i in range(len(rows)):
            for j in range(len(cohorts)):
                m, s = grid.iat[i, j], sd.iat[i, j]
                if m == m:
                    ax.text(j, i, f"{m:.3f}" + ("" if s != s else f"\n± {s:.3f}"), ha="center", va="center",
                            fontsize=8, color="w" if m < 0.62 else "k")
        ax.set_xticks(range(len(cohorts)), cohorts)
        ax.set_yticks(range(len(rows)), rows)
        title = "protocol paper (OPTIMISTIC), sd ddof 0" if p == "paper" else f"protocol {p}, sd ddof 1"
        ax.set_title(f"{label}: {title}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, stem)
