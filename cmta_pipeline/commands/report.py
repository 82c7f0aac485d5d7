"""``cmta report``: c-index tables, Kaplan-Meier curves and log-rank tests of trained runs."""

from __future__ import annotations

import base64
import html
from pathlib import Path

HELP = "c-index tables, Kaplan-Meier curves and log-rank tests of the trained runs"


def add_arguments(p) -> None:
    p.add_argument("train_dir", help="folder with <run>/fold_<k>/predictions.tsv (the workflow's {outdir}/train)")
    p.add_argument("-o", "--outdir", required=True, help="folder for cindex.tsv, cindex_summary.tsv, km_<run>.png, report.html")
    p.add_argument("--runs", nargs="*", help="runs to report (default: every run found)")


def run(args) -> int:
    import pandas as pd

    from ..errors import CMTAError
    from ..evaluation import evaluate_run, plot_km
    from ..fileio import atomic_output, write_text_atomic

    root = Path(args.train_dir)
    if not root.is_dir():
        raise CMTAError(f"{root}: training folder not found")
    runs = args.runs or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not runs:
        raise CMTAError(f"{root}: no trained runs found")
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    per_fold, summary, sections = [], [], []
    for name in runs:
        files = sorted((root / name).glob("fold_*/predictions.tsv"))
        if not files:
            raise CMTAError(f"{root / name}: no fold_*/predictions.tsv")
        res = evaluate_run(name, files)
        km = out / f"km_{name}.png"
        with atomic_output(km) as tmp:
            chisq, p = plot_km(res, tmp)
        label = "OPTIMISTIC (epoch chosen on the reported fold)" if res.optimistic else "honest"
        per_fold.append(res.per_fold.assign(run=name, protocol=label))
        summary.append({
            "run": name, "cindex_mean": res.mean, "cindex_sd": res.sd, "folds": len(res.per_fold),
            "patients": len(res.predictions), "logrank_chisq": chisq, "logrank_p": p,
            "selection": res.selection, "protocol": label,
        })
        png = base64.b64encode(km.read_bytes()).decode()
        sections.append(
            f"<h2>{html.escape(name)}</h2><p>c-index {res.mean:.4f} &plusmn; {res.sd:.4f} over "
            f"{len(res.per_fold)} folds ({html.escape(label)}, selection: {html.escape(res.selection)}); "
            f"log-rank p = {p:.3g}</p>{res.per_fold.to_html(index=False, float_format='%.4f')}"
            f'<img src="data:image/png;base64,{png}" alt="Kaplan-Meier {html.escape(name)}">'
        )
    folds = pd.concat(per_fold)[["run", "fold", "n", "events", "cindex", "protocol"]]
    table = pd.DataFrame(summary)
    with atomic_output(out / "cindex.tsv") as tmp:
        folds.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    with atomic_output(out / "cindex_summary.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    page = (
        "<!doctype html><meta charset='utf-8'><title>CMTA pipeline report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style><h1>Survival models: out-of-fold results</h1>"
        "<p>C-index (Harrell, scikit-survival) of each held-out fold; Kaplan-Meier curves of patients "
        "above/below the median predicted risk of their fold, pooled over folds, with the log-rank test.</p>"
        + table.to_html(index=False, float_format="%.4f") + "".join(sections)
    )
    write_text_atomic(out / "report.html", page)
    for row in summary:
        print(f"{row['run']}: c-index {row['cindex_mean']:.4f} +- {row['cindex_sd']:.4f} "
              f"({row['folds']} folds, {row['protocol']}), log-rank p = {row['logrank_p']:.3g}")
    return 0
