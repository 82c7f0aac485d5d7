"""The report stage's commands: `cmta report` (metrics, Kaplan-Meier figures and summaries of trained runs) and `cmta compare` (several reports in the paper's Table 1 layout)."""

from __future__ import annotations

import argparse

# ---- cmta report ----------------------------------------------------------------


def add_report_arguments(p) -> None:
    p.add_argument("train_dir", help="folder with <run>/fold_<k>/predictions.tsv (the workflow's {outdir}/train)")
    p.add_argument("-o", "--outdir", required=True,
                   help="folder for metrics.tsv, metrics_summary.tsv, cindex*.tsv, km_<run>.png/.svg, "
                        "cindex_per_fold.png/.svg, report.html, summary.md")
    p.add_argument("--runs", nargs="*", help="runs to report (default: every run found)")
    p.add_argument("--km-threshold", choices=["train_median", "pooled_median"], default="train_median",
                   help="risk-group split: each fold's training-set median risk (honest, default) or the "
                        "median of the pooled out-of-fold risks (the paper's Figure 4; labelled optimistic)")


def run_report(args) -> int:
    from .pages import fmt, write_report

    results, summary, run_notes = write_report(args.train_dir, args.outdir, args.runs, args.km_threshold)
    for res, row in zip(results, summary):
        print(f"{res.run}: c-index {fmt(res.mean(), res.sd(), 4)}, Uno {fmt(res.mean('cindex_uno'), res.sd('cindex_uno'), 4)}, "
              f"IBS {fmt(res.mean('ibs'), res.sd('ibs'), 4)} ({row['folds']} folds, {res.protocol}, "
              f"sd ddof {res.ddof}, recipe {res.recipe}), "
              f"log-rank p = {row['logrank_p']:.3g}")
        for n in res.notes:
            print(f"  gap: {n}")
    for n in run_notes:
        print(f"gap: {n}")
    return 0


# ---- cmta compare ---------------------------------------------------------------


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("result_dirs", nargs="+", metavar="RESULT_DIR",
                   help="`cmta report` folders, one per cohort, as DIR or NAME=DIR (default name: "
                        "the folder above report/, e.g. results/blca/report -> blca)")
    p.add_argument("-o", "--outdir", required=True,
                   help="folder for compare.tsv, table1_<metric>.tsv, compare.md, compare_<metric>.png/.svg")
    p.add_argument("--metric", default="cindex_harrell",
                   help="metric of the figure (default: Harrell's c-index, the paper's Table 1)")


def run_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import CMTAError
    from ..fileio import Glob, fresh_outputs
    from .comparison import read_reports
    from .metrics import METRICS

    if args.metric not in METRICS:
        raise CMTAError(f"--metric must be one of {', '.join(METRICS)}")
    out = Path(args.outdir)
    with fresh_outputs(out, ("compare.tsv", Glob("table1_*.tsv"), Glob("compare_*.png"), Glob("compare_*.svg")), marker="compare.md"):
        _write_compare(read_reports(args.result_dirs), out, args.metric)
    return 0


def _write_compare(long, out, metric: str) -> None:
    """compare.tsv, table1_<metric>.tsv, compare_<metric>.png/.svg and, last, compare.md."""
    from ..fileio import atomic_output, write_text_atomic
    from .comparison import table1, to_markdown
    from .figures import plot_comparison
    from .metrics import METRICS

    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "compare.tsv") as tmp:
        long[["cohort", "run", "protocol", "metric", "mean", "sd", "folds"]].to_csv(
            tmp, sep="\t", index=False, float_format="%.4f")
    md = ["# Models x cohorts: mean ± sd over held-out folds", "",
          "Rows marked [optimistic] chose their epoch on the reported fold (the published protocol); "
          "they are never mixed with honest runs.", ""]
    for m, label in METRICS.items():
        if not (long["metric"] == m).any() or long.loc[long.metric == m, "mean"].isna().all():
            continue
        wide = table1(long, m)
        with atomic_output(out / f"table1_{m}.tsv") as tmp:
            wide.to_csv(tmp, sep="\t", index_label="model")
        md += [to_markdown(wide, label), ""]
    fig = long[long["metric"] == metric].assign(
        row=lambda d: [r if p == "honest" else f"{r} [optimistic]" for r, p in zip(d["run"], d["protocol"])])
    plot_comparison(fig, METRICS[metric], out / f"compare_{metric}")
    write_text_atomic(out / "compare.md", "\n".join(md))
    print(table1(long, metric).to_string())


# ---- cmta table1 ----------------------------------------------------------------


def add_table1_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cohorts", nargs="+", metavar="NAME=DIR",
                   help="each cohort's folder with train/<run>/fold_<k>/predictions.tsv (the workflow's "
                        "<outdir>/<cohort>, or <outdir> of a single cohort)")
    p.add_argument("-o", "--outdir", required=True,
                   help="folder for table1.tsv, table1_paired.tsv, table1.png/.svg and table1.md")
    p.add_argument("--protocol", choices=["honest", "paper"], default="honest",
                   help="the runs' protocol: sd over folds with ddof 1 (honest) or 0 (paper, as published)")
    p.add_argument("--runs", nargs="*", help="runs to tabulate (default: every run found in each cohort)")
    p.add_argument("--study", nargs="*", default=[], metavar="NAME=STUDY",
                   help="the TCGA study of a cohort, to put the paper's numbers beside it (default: its name)")
    p.add_argument("--paper-table", help="the paper's Table 1 values (default: resources/paper_table1.tsv)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the paired comparisons")
    p.add_argument("--seed", type=int, default=1, help="seed of the bootstrap")
    p.add_argument("--external-dir", help="folder of `cmta external` outputs (<pair>/<run>/external.json): "
                                          "adds their protocol external rows")


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    from ..errors import CMTAError

    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise CMTAError(f"{what}: expected NAME=VALUE, got {item!r}")
        out.append((name, value))
    return out


def run_table1(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .paired import sentence
    from .table1 import PAPER_TABLE, wide_table, write_table1

    paper = Path(args.paper_table) if args.paper_table else PAPER_TABLE
    long, pairs = write_table1([(n, Path(d)) for n, d in _pairs(args.cohorts, "cohort")], args.outdir,
                               args.protocol, args.runs, dict(_pairs(args.study, "--study")),
                               args.n_boot, args.seed, paper,
                               Path(args.external_dir) if args.external_dir else None)
    print(wide_table(long).to_string())
    for _, row in pairs.iterrows():
        print(sentence(row))
    return 0


#: command -> (add its arguments to a parser, run it); see cmta_pipeline/cli.py
COMMANDS = {
    "report": (add_report_arguments, run_report),
    "compare": (add_compare_arguments, run_compare),
    "table1": (add_table1_arguments, run_table1),
}
