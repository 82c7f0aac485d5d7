"""``cmta compare``: several reports side by side in the paper's Table 1 layout."""

from __future__ import annotations

import argparse

HELP = "Table 1 layout (models x cohorts, mean +- sd) of several reports: TSV, Markdown, figure"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("result_dirs", nargs="+", metavar="RESULT_DIR",
                   help="`cmta report` folders, one per cohort, as DIR or NAME=DIR (default name: "
                        "the folder above report/, e.g. results/blca/report -> blca)")
    p.add_argument("-o", "--outdir", required=True,
                   help="folder for compare.tsv, table1_<metric>.tsv, compare.md, compare_<metric>.png/.svg")
    p.add_argument("--metric", default="cindex_harrell",
                   help="metric of the figure (default: Harrell's c-index, the paper's Table 1)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import CMTAError
    from ..evaluation import METRICS
    from ..figures import plot_comparison
    from ..fileio import atomic_output, write_text_atomic
    from ..comparison import read_reports, table1, to_markdown

    if args.metric not in METRICS:
        raise CMTAError(f"--metric must be one of {', '.join(METRICS)}")
    long = read_reports(args.result_dirs)
    out = Path(args.outdir)
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
    write_text_atomic(out / "compare.md", "\n".join(md))
    fig = long[long["metric"] == args.metric].assign(
        row=lambda d: [r if p == "honest" else f"{r} [optimistic]" for r, p in zip(d["run"], d["protocol"])])
    plot_comparison(fig, METRICS[args.metric], out / f"compare_{args.metric}")
    print(table1(long, args.metric).to_string())
    return 0
