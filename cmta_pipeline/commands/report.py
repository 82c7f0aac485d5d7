"""``cmta report``: survival metrics, Kaplan-Meier figures and summaries of trained runs."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

HELP = "survival metrics (Harrell, Uno, AUC(t), IBS), Kaplan-Meier figures and summaries of trained runs"


def add_arguments(p) -> None:
    p.add_argument("train_dir", help="folder with <run>/fold_<k>/predictions.tsv (the workflow's {outdir}/train)")
    p.add_argument("-o", "--outdir", required=True,
                   help="folder for metrics.tsv, metrics_summary.tsv, cindex*.tsv, km_<run>.png/.svg, "
                        "cindex_per_fold.png/.svg, report.html, summary.md")
    p.add_argument("--runs", nargs="*", help="runs to report (default: every run found)")
    p.add_argument("--km-threshold", choices=["train_median", "pooled_median"], default="train_median",
                   help="risk-group split: each fold's training-set median risk (honest, default) or the "
                        "median of the pooled out-of-fold risks (the paper's Figure 4; labelled optimistic)")


def _fmt(mean: float, sd: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def summary_markdown(results, table, km_threshold: str, run_notes: list[str]) -> str:
    """``summary.md``: one table of every metric (mean ± sd over folds) and the gaps."""
    from ..evaluation import METRICS

    lines = ["# Survival models: out-of-fold results", ""]
    head = ["run", "protocol", "folds with a c-index"] + list(METRICS) + ["log-rank p"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        row = table[table["run"] == res.run].iloc[0]
        cells = [res.run, "optimistic" if res.optimistic else "honest",
                 f"{int(res.per_fold['cindex_harrell'].notna().sum())} of {len(res.per_fold)}"]
        cells += [_fmt(res.mean(m), res.sd(m)) for m in METRICS]
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
    if any(r.optimistic for r in results):
        lines.append("Runs marked optimistic chose their epoch on the reported fold (the published "
                     "protocol): their numbers are biased upwards.")
    gaps = run_notes + [f"{r.run}: {n}" for r in results for n in r.notes]
    if gaps:
        lines += ["", "## Gaps", ""] + [f"- {g}" for g in gaps]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    import logging

    import pandas as pd

    from ..errors import CMTAError
    from ..evaluation import METRICS, evaluate_run, logrank, metrics_long, metrics_summary
    from ..figures import plot_km, plot_per_fold
    from ..fileio import atomic_output, write_text_atomic

    log = logging.getLogger(__name__)
    root = Path(args.train_dir)
    if not root.is_dir():
        raise CMTAError(f"{root}: training folder not found")
    runs = args.runs or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not runs:
        raise CMTAError(f"{root}: no trained runs found")
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    results, summary, sections, run_notes = [], [], [], []
    for name in runs:
        files = sorted((root / name).glob("fold_*/predictions.tsv"))
        if not files:
            run_notes.append(f"{name}: no fold_*/predictions.tsv under {root / name}; run left out")
            log.warning(run_notes[-1])
            continue
        without = sorted(d.name for d in (root / name).glob("fold_*") if not (d / "predictions.tsv").is_file())
        res = evaluate_run(name, files, threshold=args.km_threshold)
        if without:
            res.notes.insert(0, f"{', '.join(without)}: no predictions.tsv; left out of every metric")
        chisq, p = logrank(res.predictions["time"], res.predictions["event"], res.predictions["group"])
        optimistic_km = res.optimistic or args.km_threshold == "pooled_median"
        title = f"{name}: Harrell's c-index {_fmt(res.mean(), res.sd())}"
        sub = f"split at {res.threshold}" + ("\nOPTIMISTIC" if optimistic_km else "")
        plot_km(res.predictions, title, out / f"km_{name}", chisq, p, subtitle=sub)
        results.append(res)
        summary.append({
            "run": name, "cindex_mean": res.mean(), "cindex_sd": res.sd(), "folds": len(res.per_fold),
            "patients": len(res.predictions), "logrank_chisq": chisq, "logrank_p": p,
            "selection": res.selection, "protocol": res.protocol, "km_threshold": args.km_threshold,
        })
        png = base64.b64encode((out / f"km_{name}.png").read_bytes()).decode()
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in res.notes)
        sections.append(
            f"<h2>{html.escape(name)}</h2><p>{html.escape(res.protocol)}; selection: "
            f"{html.escape(res.selection)}; log-rank &chi;&sup2; = {chisq:.2f}, p = {p:.3g}</p>"
            + res.per_fold.to_html(index=False, float_format="%.4f", na_rep="n/a")
            + (f"<p>Gaps:</p><ul>{notes}</ul>" if notes else "")
            + f'<img src="data:image/png;base64,{png}" alt="Kaplan-Meier {html.escape(name)}" width="600">'
        )
    if not results:
        raise CMTAError(f"{root}: none of the runs {', '.join(runs)} has predictions")

    per_fold = pd.concat([r.per_fold.assign(run=r.run, protocol=r.protocol) for r in results])
    cindex = per_fold.rename(columns={"cindex_harrell": "cindex"})[["run", "fold", "n", "events", "cindex", "protocol"]]
    table = pd.DataFrame(summary)
    long, short = metrics_long(results), metrics_summary(results)
    for fname, df in (("cindex.tsv", cindex), ("cindex_summary.tsv", table),
                      ("metrics.tsv", long), ("metrics_summary.tsv", short)):
        with atomic_output(out / fname) as tmp:
            df.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    plot_per_fold(per_fold, "cindex_harrell", METRICS["cindex_harrell"], out / "cindex_per_fold")
    md = summary_markdown(results, table, args.km_threshold, run_notes)
    write_text_atomic(out / "summary.md", md)

    wide = short.assign(value=[_fmt(m, s, 4) for m, s in zip(short["mean"], short["sd"])])
    wide = wide.pivot(index=["run", "protocol"], columns="metric", values="value")[list(METRICS)].reset_index()
    fold_png = base64.b64encode((out / "cindex_per_fold.png").read_bytes()).decode()
    gaps = "".join(f"<li>{html.escape(n)}</li>" for n in run_notes)
    page = (
        "<!doctype html><meta charset='utf-8'><title>CMTA pipeline report</title>"
        "<style>body{font-family:sans-serif;max-width:64em;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style><h1>Survival models: out-of-fold results</h1>"
        "<p>Per held-out fold, with scikit-survival: Harrell's c-index (the paper's metric), Uno's IPCW "
        "c-index and cumulative/dynamic AUC at 12/36/60 months (censoring from the fold's training rows), "
        "integrated Brier score of the predicted survival curves. Mean &plusmn; sd over folds. "
        f"Kaplan-Meier curves: risk groups split at {html.escape(results[0].threshold)}, pooled over "
        "folds, 95% log-log confidence bands, log-rank test, numbers at risk.</p>"
        + wide.to_html(index=False) + (f"<ul>{gaps}</ul>" if gaps else "")
        + f'<img src="data:image/png;base64,{fold_png}" alt="c-index per fold" width="600">'
        + "".join(sections)
    )
    write_text_atomic(out / "report.html", page)
    for res, row in zip(results, summary):
        print(f"{res.run}: c-index {_fmt(res.mean(), res.sd(), 4)}, Uno {_fmt(res.mean('cindex_uno'), res.sd('cindex_uno'), 4)}, "
              f"IBS {_fmt(res.mean('ibs'), res.sd('ibs'), 4)} ({row['folds']} folds, {res.protocol}), "
              f"log-rank p = {row['logrank_p']:.3g}")
        for n in res.notes:
            print(f"  gap: {n}")
    for n in run_notes:
        print(f"gap: {n}")
    return 0
