"""Comparison across runs and cohorts in the paper's Table 1 layout: models as rows,
cohorts as columns, mean +- sd over folds; honest and optimistic runs never share a row.

Inputs are ``cmta report`` folders (their ``metrics_summary.tsv``), one per cohort.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..errors import CMTAError

COLUMNS = ("run", "protocol", "metric", "mean", "sd", "folds")


def cohort_name(path: Path) -> str:
    """A report folder's cohort: ``results/blca/report`` -> ``blca``; else the folder name."""
    return path.parent.name if path.name == "report" and path.parent.name else path.name


def read_reports(dirs: list[str]) -> pd.DataFrame:
    """``NAME=DIR`` or ``DIR`` items -> one long table: cohort, run, protocol, metric, mean, sd, folds."""
    frames = []
    for item in dirs:
        name, _, d = item.rpartition("=") if "=" in item else ("", "", item)
        path = Path(d)
        f = path / "metrics_summary.tsv"
        if not f.is_file():
            raise CMTAError(f"{f}: missing (give folders written by `cmta report`)")
        df = pd.read_csv(f, sep="\t")
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise CMTAError(f"{f}: missing column(s) {', '.join(missing)}")
        frames.append(df.assign(cohort=name or cohort_name(path.resolve())))
    table = pd.concat(frames, ignore_index=True)
    dup = table.duplicated(["cohort", "run", "metric"])
    if dup.any():
        c = table.loc[dup, "cohort"].iloc[0]
        raise CMTAError(f"cohort {c!r} is given twice; name the folders NAME=DIR")
    return table


def table1(long: pd.DataFrame, metric: str = "cindex_harrell", digits: int = 3) -> pd.DataFrame:
    """Rows ``run`` (``run [optimistic]`` for runs whose epoch was chosen on the reported
    fold), columns cohorts, cells ``mean ± sd`` of ``metric``; empty where not run."""
    part = long[long["metric"] == metric]
    if part.empty:
        raise CMTAError(f"no values of metric {metric!r}")
    part = part.assign(row=[r if p == "honest" else f"{r} [optimistic]" for r, p in zip(part["run"], part["protocol"])])

    def cell(r):
        if isinstance(r["mean"], float) and math.isnan(r["mean"]):
            return "n/a"
        sd = "" if math.isnan(r["sd"]) else f" ± {r['sd']:.{digits}f}"
        return f"{r['mean']:.{digits}f}{sd}"

    part = part.assign(cell=part.apply(cell, axis=1))
    wide = part.pivot(index="row", columns="cohort", values="cell").fillna("")
    order = list(dict.fromkeys(part.sort_values(["protocol", "run"])["row"]))
    return wide.reindex(order)[list(dict.fromkeys(part["cohort"]))]


def to_markdown(wide: pd.DataFrame, title: str) -> str:
    head = ["model"] + list(wide.columns)
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([str(i)] + list(r)) + " |" for i, r in zip(wide.index, wide.to_numpy())]
    return "\n".join(lines) + "\n"
