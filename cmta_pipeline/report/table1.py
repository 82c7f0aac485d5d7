"""Table 1 of the paper from this pipeline's runs: models x cohorts, mean +- sd over folds,
with the paired comparisons (``cmta table1``; docs/report.md, "Table 1").

Input: one folder per cohort holding ``train/<run>/fold_<k>/predictions.tsv`` (the
workflow's ``<outdir>/<cohort>``, or ``<outdir>`` of a single cohort). Every metric of
:mod:`.metrics` is computed per held-out fold; mean and sd over the folds with a value.
The sd's ddof follows the protocol (:func:`.protocol.sd_ddof`): 1 for ``honest``, 0 for
``paper`` (the authors' ``np.std``), and ``table1.tsv`` says which in ``sd_ddof``.

Several encoders: a run folder ``<run>@<encoder>`` holds ``<run>`` trained on that
encoder's features (the workflow's ``features.encoders`` after the first); the encoder of
any other run is the one its ``summary.json`` names (``none`` for models that read no
slides). Rows are per (cohort, run, encoder), and labelled ``<run>@<encoder>`` when the table
holds more than one encoder.

``split_by`` says how a cohort's folds were made (``patient``, ``site``: site-preserved, or
``files``); two cohorts of the same patients under random and site-preserved folds stand
side by side. ``--external-dir`` adds the ``protocol: external`` rows of ``cmta external``
(:mod:`.external`; cohort ``<train>-><test>``, with ci_low, ci_high, n_patients, logrank_p,
imputed_patients).

Outputs (in ``outdir``): ``table1.tsv`` (long: cohort, run, encoder, recipe, protocol,
optimistic, metric, mean, sd, sd_ddof, n_folds, split_by, then the external columns),
``table1_paired.tsv`` (:mod:`.paired`),
``table1.png``/``.svg`` (heat table of the c-index) and, last, ``table1.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .external import external_rows
from .metrics import METRICS, evaluate_run
from .paired import PAIRED_COLUMNS, paired_table, sentence, split_pairs
from .protocol import sd_ddof

TABLE1_COLUMNS = ["cohort", "run", "encoder", "recipe", "protocol", "optimistic", "metric", "mean", "sd",
                  "sd_ddof", "n_folds", "split_by"]
#: the columns of ``protocol: external`` rows (:mod:`.external`), empty on the others
EXTERNAL_COLUMNS = ["ci_low", "ci_high", "n_patients", "logrank_p", "imputed_patients"]
OUTPUTS = ("table1.tsv", "table1_paired.tsv", "table1.png", "table1.svg")
#: the paper's own numbers (Zhou et al., ICCV 2023, Table 1), shown beside protocol paper
PAPER_TABLE = Path(__file__).resolve().parents[2] / "resources" / "paper_table1.tsv"


def run_files(cohort_dir: Path, runs: list[str] | None) -> dict[str, list[Path]]:
    """run -> its folds' predictions.tsv under ``cohort_dir/train`` (``runs``: only these,
    in this order; one a cohort did not train, such as a slide model of a genomics-only
    cohort, is left out of that cohort)."""
    train = Path(cohort_dir) / "train"
    found = {d.name: sorted(d.glob("fold_*/predictions.tsv")) for d in sorted(train.glob("*")) if d.is_dir()}
    found = {r: f for r, f in found.items() if f}
    if runs is None:
        return found
    return {r: found[r] for r in runs if r in found}


def recipe_of(files: list[Path]) -> str:
    """The folds' ``summary.json`` "recipe" (default "cmta"), joined when folds differ."""
    recipes = []
    for f in files:
        s = f.with_name("summary.json")
        recipes.append(str(json.loads(s.read_text()).get("recipe", "cmta")) if s.is_file() else "cmta")
    return "/".join(dict.fromkeys(recipes)) or "cmta"


def run_encoder(run: str, files: list[Path]) -> tuple[str, str]:
    """(run, encoder) of a run folder: ``cmta@uni_v1`` -> (cmta, uni_v1); else the encoder
    its folds' ``summary.json`` name ("none" for a model that reads no slides, "" where no
    summary says)."""
    from ..modalities import MODALITIES, reads_slides

    name, _, encoder = run.partition("@")
    if encoder:
        return name, encoder
    model = name.split("-")[0]
    if model in MODALITIES and not reads_slides(model):
        return name, "none"
    found = []
    for f in files:
        s = f.with_name("summary.json")
        found.append(json.loads(s.read_text()).get("encoder") if s.is_file() else None)
    return name, "/".join(dict.fromkeys(e for e in found if e))


def summarise(values, protocol: str) -> tuple[float, float, int]:
    """(mean, sd with the protocol's ddof, number of folds with a value)."""
    v = np.asarray([x for x in values if x == x], float)
    ddof = sd_ddof(protocol)
    mean = float(v.mean()) if len(v) else math.nan
    sd = float(v.std(ddof=ddof)) if len(v) > ddof else math.nan
    return mean, sd, len(v)


def split_of(cohort_dir: Path) -> str:
    """How the cohort's folds were made: ``site`` (site-preserved), ``patient`` (stratified
    by patient) or ``files`` (split files), from ``cohort/folds.json``."""
    marker = Path(cohort_dir) / "cohort" / "folds.json"
    if not marker.is_file():
        return ""
    summary = json.loads(marker.read_text())
    by = summary.get("split_by", "patient")
    return "files" if by == "patient" and Path(str(summary.get("splits", ""))).is_dir() else by


def cohort_rows(cohort: str, cohort_dir: Path, protocol: str, runs: list[str] | None):
    """(table1 rows of one cohort, (run, encoder) -> pooled held-out predictions)."""
    rows, preds = [], {}
    split = split_of(cohort_dir)
    for folder, files in run_files(cohort_dir, runs).items():
        run, encoder = run_encoder(folder, files)
        res = evaluate_run(folder, files)
        preds[(run, encoder)] = res.predictions
        for m in METRICS:
            mean, sd, n = summarise(res.per_fold[m], protocol)
            rows.append({"cohort": cohort, "run": run, "encoder": encoder, "recipe": recipe_of(files),
                         "protocol": protocol,
                         "optimistic": bool(res.optimistic), "metric": m, "mean": mean, "sd": sd,
                         "sd_ddof": sd_ddof(protocol), "n_folds": n, "split_by": split})
    if not rows:
        raise CMTAError(f"{Path(cohort_dir) / 'train'}: no run with predictions")
    return rows, preds


def build_table1(cohorts: list[tuple[str, Path]], protocol: str = "honest", runs: list[str] | None = None,
                 n_boot: int = 1000, seed: int = 1, external: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table1 long, paired comparisons) of ``cohorts`` [(name, folder)], with the
    ``protocol: external`` rows of ``external`` (a folder of ``cmta external`` outputs)."""
    names = [c for c, _ in cohorts]
    if len(set(names)) != len(names):
        raise CMTAError(f"cohort {next(c for c in names if names.count(c) > 1)!r} is given twice")
    rows, paired, by_cohort = [], [], {}
    for name, folder in cohorts:
        r, preds = cohort_rows(name, Path(folder), protocol, runs)
        rows += r
        by_cohort[name] = preds
        paired.append(paired_table(name, preds, n_boot, seed))
    schemes = {name: split_of(Path(folder)) for name, folder in cohorts}
    paired.append(split_pairs(by_cohort, n_boot, seed, schemes))  # random vs site-preserved folds
    paired = [p for p in paired if len(p)]
    pairs = pd.concat(paired, ignore_index=True) if paired else pd.DataFrame(columns=PAIRED_COLUMNS)
    if external is not None:
        rows += [r for r in external_rows(external) if runs is None or r["run"] in runs]
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS + EXTERNAL_COLUMNS), pairs


def read_paper_table(path: Path = PAPER_TABLE) -> pd.DataFrame:
    """model, study, mean, sd, source (the paper's Table 1 values known here)."""
    return pd.read_csv(path, sep="\t", comment="#")


def row_label(run: str, optimistic: bool, encoder: str = "") -> str:
    """The run (``<run>@<encoder>`` given an encoder), ``[optimistic]`` where it is."""
    name = f"{run}@{encoder}" if encoder else run
    return f"{name} [optimistic]" if optimistic else name


def row_labels(long: pd.DataFrame) -> list[str]:
    """Each row's label: the run with its encoder when ``long`` holds several encoders."""
    encoders = long["encoder"].fillna("").astype(str) if "encoder" in long else pd.Series([""] * len(long))
    several = len(set(encoders) - {"", "none"}) > 1
    return [row_label(r, o, e if several and e not in ("", "none") else "")
            for r, o, e in zip(long["run"], long["optimistic"], encoders)]


def wide_table(long: pd.DataFrame, metric: str = "cindex_harrell", digits: int = 4) -> pd.DataFrame:
    """Rows run (optimistic ones labelled), columns cohorts, cells ``mean ± sd``."""
    part = long[long["metric"] == metric]

    def cell(r):
        if math.isnan(r["mean"]):
            return "n/a"
        if not pd.isna(r.get("ci_low", math.nan)):  # protocol external: the bootstrap interval
            return f"{r['mean']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"
        return f"{r['mean']:.{digits}f}" + ("" if math.isnan(r["sd"]) else f" ± {r['sd']:.{digits}f}")

    part = part.assign(row=row_labels(part), cell=part.apply(cell, axis=1))
    wide = part.pivot(index="row", columns="cohort", values="cell").fillna("")
    return wide.reindex(list(dict.fromkeys(part["row"])))[list(dict.fromkeys(part["cohort"]))]


def paper_rows(cohorts: list[str], studies: dict[str, str], paper: pd.DataFrame, digits: int = 4,
               runs: list[str] | None = None) -> pd.DataFrame:
    """The paper's own c-indices as rows ``<model> (paper)`` under our cohorts' names: of
    the methods whose ``run`` is in ``runs`` (every method when None), cells the paper's
    table gives (an empty cell of resources/paper_table1.tsv is unknown: shown empty)."""
    out = {}
    for _, r in paper.iterrows():
        run = str(r["run"]) if "run" in paper.columns and not pd.isna(r["run"]) else str(r["model"]).lower()
        if runs is not None and run not in runs:
            continue
        for c in cohorts:
            if studies.get(c, c).lower() == str(r["study"]).lower():
                cell = out.setdefault(f"{r['model']} (paper)", {})
                if pd.isna(r["mean"]):
                    continue
                sd = "" if pd.isna(r["sd"]) else f" ± {r['sd']:.{digits}f}"
                cell[c] = f"{r['mean']:.{digits}f}{sd}"
    return pd.DataFrame.from_dict(out, orient="index").reindex(columns=cohorts).fillna("")


def to_markdown(wide: pd.DataFrame) -> list[str]:
    head = ["model"] + list(wide.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join([str(i)] + list(r)) + " |" for i, r in zip(wide.index, wide.to_numpy())]


def markdown(long: pd.DataFrame, pairs: pd.DataFrame, studies: dict[str, str], paper: pd.DataFrame | None) -> str:
    """table1.md: the c-index table per protocol, the other metrics, the paired comparisons."""
    md = ["# Table 1: Harrell's c-index, models x cohorts", "",
          "Mean ± sd over held-out folds (`table1.tsv` has every metric).", ""]
    for protocol, part in long.groupby("protocol", sort=False):
        ddof = sd_ddof(protocol)
        if protocol == "external":
            md += ["## Protocol external (trained on one cohort, tested on another)", "",
                   "Columns `<train>-><test>`: the train cohort's fold ensemble on every test patient; "
                   "Harrell's c-index [95 % bootstrap interval over the test patients]. `table1.tsv` has "
                   "the patients, the log-rank p at the train cohort's threshold and the patients with "
                   "genes filled (each fold's training median).", ""]
        elif protocol == "paper":
            md += ["## Protocol paper (OPTIMISTIC: bins from the whole cohort, epoch chosen on the reported fold)",
                   "", f"sd: ddof {ddof} (numpy's np.std over folds, as the paper computed it).", ""]
        else:
            md += [f"## Protocol {protocol}", "", f"sd: ddof {ddof} (sample standard deviation over folds).", ""]
        wide = wide_table(part)
        if protocol == "paper" and paper is not None:
            shown = paper_rows(list(wide.columns), studies, paper, runs=list(dict.fromkeys(part["run"])))
            wide = pd.concat([wide, shown]).fillna("")
            md_note = ["", "Rows `(paper)`: Zhou et al., ICCV 2023, Table 1 (resources/paper_table1.tsv), "
                           "beside every model this run trained; an empty cell or sd is not known here."]
        else:
            md_note = []
        md += to_markdown(wide) + md_note + [""]
        if part["optimistic"].any():
            md += ["Rows marked [optimistic] chose their epoch on the reported fold.", ""]
    md += ["## Paired comparisons (same held-out patients)", "",
           "Difference of Harrell's c-index (per fold, averaged over folds); 95 % interval from "
           "bootstrap resamples of the held-out patients within each fold (paired, seeded).", ""]
    several = len(set(long.get("encoder", pd.Series(dtype=str)).fillna("")) - {"", "none"}) > 1
    md += [f"* {sentence(r, several)}" for _, r in pairs.iterrows()] or ["* no pair of runs to compare"]
    if pairs["cohort"].astype(str).str.contains(" vs ").any():
        md += ["", "Rows `<c1> vs <c2>`: one run under two fold schemes of the same patients (e.g. random and "
                   "site-preserved folds); the patients are resampled over the whole cohort, the same draw "
                   "for both schemes."]
    return "\n".join(md) + "\n"


def write_table1(cohorts: list[tuple[str, Path]], outdir, protocol: str = "honest", runs: list[str] | None = None,
                 studies: dict[str, str] | None = None, n_boot: int = 1000, seed: int = 1,
                 paper_table: Path | None = PAPER_TABLE, external: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the Table 1 files (module doc) into ``outdir``; returns (long, paired)."""
    from ..fileio import atomic_output, fresh_outputs, write_text_atomic
    from .figures import plot_heat_table

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    with fresh_outputs(out, OUTPUTS, marker="table1.md"):
        long, pairs = build_table1(cohorts, protocol, runs, n_boot, seed, external)
        with atomic_output(out / "table1.tsv") as tmp:
            long.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        with atomic_output(out / "table1_paired.tsv") as tmp:
            pairs.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        c = long[long["metric"] == "cindex_harrell"]
        plot_heat_table(c.assign(row=row_labels(c)), METRICS["cindex_harrell"], out / "table1")
        paper = read_paper_table(paper_table) if paper_table and Path(paper_table).is_file() else None
        write_text_atomic(out / "table1.md", markdown(long, pairs, studies or {}, paper))
    return long, pairs
