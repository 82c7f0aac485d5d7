"""Survival from the GDC's clinical exports: ``clinical.tsv`` of every generation, and the
``follow_up.tsv`` of the same download.

Three layouts are read by column name, never by position (the column set changes between
exports: 210 and 201 columns were both seen in 2025-26):

* since 2024 ("Data Portal 2.0"): prefixed columns ``project.project_id``,
  ``cases.submitter_id``, ``demographic.vital_status``, ``demographic.days_to_death``,
  ``diagnoses.days_to_last_follow_up``, ...; four columns end in ``submitter_id``
  (``cases.``, ``demographic.``, ``diagnoses.``, ``treatments.``): the case is
  ``cases.submitter_id``;
* about 2021-24: unprefixed ``case_submitter_id``, ``project_id``, ``vital_status``, ...;
* 2018: ``submitter_id``, lower-case ``alive``/``dead``, ``--`` for missing.

A case has one row per diagnosis x treatment (and more in ``follow_up.tsv``, whose
``follow_ups.days_to_follow_up`` is where the GDC moved TCGA's follow-up in 2025). All
day counts are from the case's index date, so per case the time of death is the largest
``days_to_death`` and the last contact the largest follow-up over every row of both
files (the primary diagnosis carries ``days_to_last_follow_up``, the others ``'--``).

Per case (:func:`case_survival`): ``Dead`` -> event at days_to_death; ``Alive`` ->
censored at the last contact; ``Unknown``/``Not Reported``/empty -> censored at the last
contact when there is one (alive when last seen, nothing known after: what censoring
means). Otherwise the case has no usable survival and the reason says why: "Dead without
days_to_death", "Alive without follow-up", "vital_status Not Reported, no follow-up",
"vital_status Not Reported with days_to_death", "rows disagree on vital_status (Alive, Dead)".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from ..ids import check_ids
from .survival import DAYS_PER_MONTH
from .tables import examples

#: field -> its column in each layout, in order of preference
COLUMNS = {
    "case": ("cases.submitter_id", "case_submitter_id", "submitter_id"),
    "project": ("project.project_id", "project_id", "cases.project_id"),
    "vital": ("demographic.vital_status", "vital_status"),
    "death": ("demographic.days_to_death", "days_to_death"),
    "last_follow_up": ("diagnoses.days_to_last_follow_up", "days_to_last_follow_up"),
    "follow_up": ("follow_ups.days_to_follow_up", "days_to_follow_up"),
}
#: vital_status values of the GDC dictionary (demographic.yaml), lower case
VITAL = ("alive", "dead", "unknown", "not reported")


def column(df: pd.DataFrame, field: str) -> str | None:
    return next((c for c in COLUMNS[field] if c in df.columns), None)


def is_gdc_clinical(df: pd.DataFrame) -> bool:
    return column(df, "vital") is not None


def is_gdc_follow_up(df: pd.DataFrame) -> bool:
    return column(df, "vital") is None and column(df, "follow_up") is not None and column(df, "case") is not None


def layout(df: pd.DataFrame) -> str:
    if any(c.startswith("cases.") for c in df.columns):
        return "GDC clinical table (prefixed columns, 2024 on)"
    return "GDC clinical table (case_submitter_id, 2021-24)" if "case_submitter_id" in df.columns \
        else "GDC clinical table (submitter_id, 2018)"


def _days(df: pd.DataFrame, field: str, path: Path, ids: pd.Series) -> pd.Series:
    col = column(df, field)
    if col is None:
        return pd.Series(np.nan, index=df.index)
    num = pd.to_numeric(df[col], errors="coerce")
    bad = num.isna() & df[col].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CMTAError(f"{path}: line {i + 2}, case {ids.iloc[i]}: {col} {df[col].iloc[i]!r} is not a number")
    return num


def _rows(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """Per row: case, vital (lower case or NaN), death, last contact (days)."""
    case_col = column(df, "case")
    if case_col is None:
        raise CMTAError(f"{path}: no case id column ({', '.join(COLUMNS['case'])}): not a GDC clinical table")
    empty = df[case_col].isna()
    if empty.any():
        raise CMTAError(f"{path}: line {int(np.flatnonzero(empty.to_numpy())[0]) + 2}: {case_col} is empty")
    ids = df[case_col].astype(str).str.strip()
    check_ids(ids, case_col, str(path))  # the one identifier rule (cmta_pipeline/ids.py)
    vital_col = column(df, "vital")
    vital = (df[vital_col].astype(str).str.strip().str.lower().where(df[vital_col].notna())
             if vital_col else pd.Series(np.nan, index=df.index))
    bad = vital.notna() & ~vital.isin(VITAL)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CMTAError(
            f"{path}: line {i + 2}, case {ids.iloc[i]}: {vital_col} {df[vital_col].iloc[i]!r} is not one of "
            "Alive, Dead, Unknown, Not Reported (the GDC dictionary's values)"
        )
    contact = pd.concat([_days(df, "last_follow_up", path, ids), _days(df, "follow_up", path, ids)], axis=1).max(axis=1)
    label = df[vital_col].astype(str).str.strip() if vital_col else pd.Series("", index=df.index)
    return pd.DataFrame({"case_id": ids, "vital": vital, "label": label,
                         "death": _days(df, "death", path, ids), "contact": contact})


def case_survival(vitals: set[str], labels: set[str], death: float, contact: float) -> tuple[float, float, str]:
    """(days, censorship, reason) of one case; days NaN and a reason when unusable."""
    if {"alive", "dead"} <= vitals:
        return np.nan, np.nan, "rows disagree on vital_status (Alive, Dead)"
    if "dead" in vitals:
        return (death, 0, "") if pd.notna(death) else (np.nan, np.nan, "Dead without days_to_death")
    if "alive" in vitals:
        return (contact, 1, "") if pd.notna(contact) else (np.nan, np.nan, "Alive without follow-up")
    label = ", ".join(sorted(labels)) or "missing"
    if pd.notna(death):
        return np.nan, np.nan, f"vital_status {label} with days_to_death"
    if pd.notna(contact):
        return contact, 1, ""  # unknown vital status: censored at the last contact
    return np.nan, np.nan, f"vital_status {label}, no follow-up"


def gdc_survival(clinical: list[tuple[Path, pd.DataFrame]], follow_ups: list[tuple[Path, pd.DataFrame]],
                 audit: list | None = None) -> pd.DataFrame:
    """case_id, survival_months, censorship, reason (empty when usable) of GDC clinical
    tables and follow-up tables (:func:`case_survival`)."""
    rows = pd.concat([_rows(p, df) for p, df in clinical], ignore_index=True)
    if follow_ups:
        extra = pd.concat([_rows(p, df) for p, df in follow_ups], ignore_index=True)
        known = set(rows["case_id"])
        rows = pd.concat([rows, extra[extra["case_id"].isin(known)].assign(vital=np.nan, label="", death=np.nan)],
                         ignore_index=True)
        if audit is not None:
            for p, _ in follow_ups:
                audit.append((str(p), "GDC follow-up table: cases with a follow-up day count",
                              int(extra.loc[extra["contact"].notna(), "case_id"].nunique()), ""))
    out = []
    for case, g in rows.groupby("case_id", sort=False):
        labels = set(g.loc[g["vital"].notna(), "label"])
        days, cens, reason = case_survival(set(g["vital"].dropna()), labels, g["death"].max(), g["contact"].max())
        months = np.round(days / DAYS_PER_MONTH, 2) if pd.notna(days) else np.nan
        out.append((case, months, cens, reason))
    if audit is not None:
        for p, df in clinical:
            proj = column(df, "project")
            detail = ""
            if proj:
                counts = df.drop_duplicates(column(df, "case"))[proj].value_counts()
                detail = "projects: " + examples([f"{k} {v}" for k, v in counts.items()])
            audit.append((str(p), f"patients found ({layout(df)})", int(df[column(df, "case")].nunique()), detail))
    return pd.DataFrame(out, columns=["case_id", "survival_months", "censorship", "reason"])
