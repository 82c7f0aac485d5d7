"""The demo's result: every model's held-out c-index beside the planted risk's (the
oracle) and each modality's half of it, on the same patients, fold by fold."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import CMTAError


def oracle_cindexes(patients: pd.DataFrame) -> dict[str, float]:
    """c-index of the planted risk and of each modality's half of it, on these patients."""
    from ..report.metrics import cindex

    event = 1 - patients["censorship"].to_numpy()
    t = patients["survival_months"].to_numpy()
    return {
        "planted risk (oracle)": cindex(patients["risk"], t, event),
        "morphology score alone": cindex(patients["morphology"], t, event),
        "genomic score alone": cindex(patients["genomic"], t, event),
    }


def planted_summary(patients_file: str | os.PathLike, cindex_file: str | os.PathLike,
                    train_dir: str | os.PathLike) -> pd.DataFrame:
    """The models' held-out c-index beside the oracle's, fold by fold.

    ``cindex_file`` is the report's per-fold table (run, fold, cindex, ...); the oracle
    rows are the c-index of the planted risk (and of each modality's half of it) on the
    same held-out patients, read from the first run's ``<train_dir>/<run>/fold_<k>/predictions.tsv``
    (every run of a cohort holds out the same patients). Returns one row per run and
    oracle: ``run``, ``mean``, ``sd``, ``fold_<k>``..."""
    patients = pd.read_csv(patients_file, sep="\t", dtype={"case_id": str}).set_index("case_id")
    per_fold = pd.read_csv(cindex_file, sep="\t")
    missing = [c for c in ("run", "fold", "cindex") if c not in per_fold.columns]
    if missing:
        raise CMTAError(f"{cindex_file}: missing column(s) {', '.join(missing)}")
    rows = {run: dict(zip(g["fold"], g["cindex"])) for run, g in per_fold.groupby("run", sort=False)}
    train_dir = Path(train_dir)
    run0 = next(iter(rows))
    for fold in sorted(rows[run0]):
        pred = pd.read_csv(train_dir / run0 / f"fold_{fold}" / "predictions.tsv", sep="\t", dtype={"case_id": str})
        held = patients.loc[pred["case_id"]]
        for name, value in oracle_cindexes(held).items():
            rows.setdefault(name, {})[fold] = value
    table = pd.DataFrame(rows).T
    table.columns = [f"fold_{k}" for k in table.columns]
    table.insert(0, "sd", table.std(axis=1, ddof=1))
    table.insert(0, "mean", table.drop(columns="sd").mean(axis=1))
    return table.rename_axis("run").reset_index()
