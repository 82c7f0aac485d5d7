"""What ``cmta report`` writes (:func:`write_report`): per run and fold the survival
metrics, the Kaplan-Meier figures with the log-rank test, the tables (``cindex*.tsv``,
``metrics*.tsv``), ``summary.md`` and a self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
import logging
import math
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from ..fileio import Glob, atomic_output, fresh_outputs, write_text_atomic
from .figures import plot_km, plot_per_fold
from .metrics import METRICS, evaluate_run, logrank, metrics_long, metrics_summary

log = logging.getLogger(__name__)


def fmt(mean: float, sd: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def sd_caption(results) -> str:
    """Which sd each run shows: ddof 0 (the paper's np.std) for protocol paper runs, else 1."""
    by = {d: [r.run for r in results if r.ddof == d] for d in (0, 1)}
    parts = [f"ddof 1 (sample sd) for {', '.join(by[1])}" if by[1] else "",
             f"ddof 0 (np.std, as the paper computes it; protocol: paper) for {', '.join(by[0])}"
             if by[0] else ""]
    return "sd over folds: " + "; ".join(p for p in parts if p) + "."


def recipe_caption(results) -> str:
    """Each run's training recipe (cmta: CMTA's optimisation; reference: its authors')."""
    return "Training recipe: " + ", ".join(f"{r.run} {r.recipe}" for r in results) + "."


def summary_markdown(results, table, km_threshold: str, run_notes: list[str]) -> str:
    """``summary.md``: one table of every metric (mean ± sd over folds) and the gaps."""
    lines = ["# Survival models: out-of-fold results", ""]
    head = ["run", "protocol", "folds with a c-index"] + list(METRICS) + ["log-rank p"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        row = table[table["run"] == res.run].iloc[0]
        cells = [res.run, "optimistic" if res.optimistic else "honest",
                 f"{int(res.per_fold['cindex_harrell'].notna().sum())} of {len(res.per_fold)}"]
        cells += [fmt(res.mean(m), res.sd(m)) for m in METRICS]
        cells.append("n/a" if math.isnan(row["logrank_p"]) else f"{row['logrank_p']:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean ± sd over held-out folds (scikit-survival): "
        + "; ".join(f"`{m}` {label}" for m, label in METRICS.items()) + ". "
        "Uno's c-index, AUC and IBS weight by the censoring distribution of each fold's "
        "training rows; IBS integrates the Brier score of the predicted survival curves "
        "(step functions over the time bins) from the 10th to the 90th percentile of each "
        "fold's observed times. Higher is better except for IBS.",
        f"Risk groups for the log-rank test: {results[0].threshold if results else km_threshold}.",
    ]
    lines.append(sd_caption(results) + " " + recipe_caption(results))
    if any(r.optimistic for r in results):
        lines.append("Runs marked optimistic chose their epoch on the reported fold and/or cut the "
                     "survival bins on the whole cohort (labels_from: all): their numbers are biased "
                     "upwards. " + "; ".join(f"{r.run}: {r.protocol}" for r in results if r.optimistic) + ".")
    gaps = run_notes + [f"{r.run}: {n}" for r in results for n in r.notes]
    if gaps:
        lines += ["", "## Gaps", ""] + [f"- {g}" for g in gaps]
    return "\n".join(lines) + "\n"


#: What ``cmta report`` writes besides report.html, its completion marker (written last).
REPORT_OUTPUTS = ("cindex.tsv", "cindex_summary.tsv", "metrics.tsv", "metrics_summary.tsv", "summary.md",
                  "cindex_per_fold.png", "cindex_per_fold.svg", Glob("km_*.png"), Glob("km_*.svg"))


def write_report(train_dir, outdir, runs: list[str] | None = None,
                 km_threshold: str = "train_median") -> tuple[list, list[dict], list[str]]:
    """Evaluate the runs under ``train_dir`` and write the report to ``outdir``; returns
    (one result per run, the summary rows, notes on runs left out). The previous report
    in ``outdir`` is removed first (report.html, then the rest), and whatever a failed run
    wrote is removed again: nothing is left that looks like a finished report."""
    with fresh_outputs(outdir, REPORT_OUTPUTS, marker="report.html"):
        return _write_report(Path(train_dir), Path(outdir), runs, km_threshold)


def _write_report(root: Path, out: Path, runs: list[str] | None, km_threshold: str):
    if not root.is_dir():
        raise CMTAError(f"{root}: training folder not found")
    runs = runs or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not runs:
        raise CMTAError(f"{root}: no trained runs found")
    out.mkdir(parents=True, exist_ok=True)
    results, summary, sections, run_notes = [], [], [], []
    for name in runs:
        files = sorted((root / name).glob("fold_*/predictions.tsv"))
        if not files:
            run_notes.append(f"{name}: no fold_*/predictions.tsv under {root / name}; run left out")
            log.warning(run_notes[-1])
            continue
        res, row = _evaluate(root, name, files, km_threshold, out)
        results.append(res)
        summary.append(row)
        sections.append(_run_section(res, row, out))
    if not results:
        raise CMTAError(f"{root}: none of the runs {', '.join(runs)} has predictions")

    per_fold = pd.concat([r.per_fold.assign(run=r.run, protocol=r.protocol, ddof=r.ddof) for r in results])
    cindex = per_fold.rename(columns={"cindex_harrell": "cindex"})[["run", "fold", "n", "events", "cindex", "protocol"]]
    table = pd.DataFrame(summary)
    long, short = metrics_long(results), metrics_summary(results)
    for fname, df in (("cindex.tsv", cindex), ("cindex_summary.tsv", table),
                      ("metrics.tsv", long), ("metrics_summary.tsv", short)):
        with atomic_output(out / fname) as tmp:
            df.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    plot_per_fold(per_fold, "cindex_harrell", METRICS["cindex_harrell"], out / "cindex_per_fold")
    md = summary_markdown(results, table, km_threshold, run_notes)
    write_text_atomic(out / "summary.md", md)
    write_text_atomic(out / "report.html", _html_page(results, short, sections, run_notes, out))
    return results, summary, run_notes


def _evaluate(root: Path, name: str, files, km_threshold: str, out: Path):
    """One run's metrics and its Kaplan-Meier figure; (result, its summary row)."""
    without = sorted(d.name for d in (root / name).glob("fold_*") if not (d / "predictions.tsv").is_file())
    res = evaluate_run(name, files, threshold=km_threshold)
    if without:
        res.notes.insert(0, f"{', '.join(without)}: no predictions.tsv; left out of every metric")
    chisq, p = logrank(res.predictions["time"], res.predictions["event"], res.predictions["group"])
    optimistic_km = res.optimistic or km_threshold == "pooled_median"
    title = f"{name}: Harrell's c-index {fmt(res.mean(), res.sd())}"
    sub = (f"split at {res.threshold}; recipe {res.recipe}, sd ddof {res.ddof}"
           + ("\nOPTIMISTIC" if optimistic_km else ""))
    plot_km(res.predictions, title, out / f"km_{name}", chisq, p, subtitle=sub)
    row = {
        "run": name, "cindex_mean": res.mean(), "cindex_sd": res.sd(), "folds": len(res.per_fold),
        "patients": len(res.predictions), "logrank_chisq": chisq, "logrank_p": p,
        "selection": res.selection, "protocol": res.protocol, "km_threshold": km_threshold,
        "recipe": res.recipe, "sd_ddof": res.ddof,
    }
    return res, row


def _run_section(res, row: dict, out: Path) -> str:
    """The HTML section of one run: its folds, gaps and Kaplan-Meier figure."""
    name = res.run
    png = base64.b64encode((out / f"km_{name}.png").read_bytes()).decode()
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in res.notes)
    return (
        f"<h2>{html.escape(name)}</h2><p>{html.escape(res.protocol)}; selection: "
        f"{html.escape(res.selection)}; recipe: {html.escape(res.recipe)}; sd ddof {res.ddof}; log-rank &chi;&sup2; = {row['logrank_chisq']:.2f}, p = {row['logrank_p']:.3g}</p>"
        + res.per_fold.to_html(index=False, float_format="%.4f", na_rep="n/a")
        + (f"<p>Gaps:</p><ul>{notes}</ul>" if notes else "")
        + f'<img src="data:image/png;base64,{png}" alt="Kaplan-Meier {html.escape(name)}" width="600">'
    )


def _html_page(results, short: pd.DataFrame, sections: list[str], run_notes: list[str], out: Path) -> str:
    """``report.html``: every metric of every run, the per-fold figure and each run's section."""
    wide = short.assign(value=[fmt(m, s, 4) for m, s in zip(short["mean"], short["sd"])])
    wide = wide.pivot(index=["run", "protocol"], columns="metric", values="value")[list(METRICS)].reset_index()
    fold_png = base64.b64encode((out / "cindex_per_fold.png").read_bytes()).decode()
    gaps = "".join(f"<li>{html.escape(n)}</li>" for n in run_notes)
    return (
        "<!doctype html><meta charset='utf-8'><title>CMTA pipeline report</title>"
        "<style>body{font-family:sans-serif;max-width:64em;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style><h1>Survival models: out-of-fold results</h1>"
        "<p>Per held-out fold, with scikit-survival: Harrell's c-index (the paper's metric), Uno's IPCW "
        "c-index and cumulative/dynamic AUC at 12/36/60 months (censoring from the fold's training rows), "
        "integrated Brier score of the predicted survival curves. Mean &plusmn; sd over folds. "
        f"{html.escape(sd_caption(results))} {html.escape(recipe_caption(results))} "
        f"Kaplan-Meier curves: risk groups split at {html.escape(results[0].threshold)}, pooled over "
        "folds, 95% log-log confidence bands, log-rank test, numbers at risk.</p>"
        + wide.to_html(index=False) + (f"<ul>{gaps}</ul>" if gaps else "")
        + f'<img src="data:image/png;base64,{fold_png}" alt="c-index per fold" width="600">'
        + "".join(sections)
    )
