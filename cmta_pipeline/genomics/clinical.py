"""Survival per patient from a clinical table: cBioPortal's patient table or the GDC's
``clinical.tsv``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .survival import DAYS_PER_MONTH, check_survival
from .tables import NA_VALUES, read_table

GDC_PREFIXES = ("cases.", "demographic.", "diagnoses.", "follow_ups.", "exposures.", "treatments.")


def read_clinical(
    path: str | os.PathLike, missing_survival: str = "error", nonpositive_followup: str = "drop",
    audit: list | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Survival per patient from a cBioPortal or a GDC clinical table.

    cBioPortal (``data_clinical_patient.txt``): PATIENT_ID, OS_MONTHS, OS_STATUS
    (``1:DECEASED``/``0:LIVING`` or ``DECEASED``/``LIVING``); ``#`` header rows skipped.
    GDC (``clinical.tsv``, with or without the ``cases.``/``demographic.``/``diagnoses.``
    column prefixes of today's download): case_submitter_id, vital_status (Dead/Alive),
    days_to_death, days_to_last_follow_up and/or days_to_follow_up (the follow_ups node,
    where the GDC moved TCGA's follow-up in 2025); one row per case x diagnosis x
    follow-up x treatment, so per case the largest days_to_death and follow-up are used; months =
    days / 30.44, rounded to 2 decimals as in the published tables. Returns (survival
    indexed by case_id, patient -> reason for those left out).
    """
    path = Path(path)
    df = read_table(path, "clinical", dtype=str, na_values=NA_VALUES, keep_default_na=False)
    df.columns = [next((c[len(p):] for p in GDC_PREFIXES if c.startswith(p)), c) for c in map(str, df.columns)]
    if {"PATIENT_ID", "OS_MONTHS", "OS_STATUS"} <= set(df.columns):
        kind, surv = "cBioPortal patient table", cbioportal_survival(path, df)
    else:
        kind, surv = "GDC clinical table", gdc_survival(path, df)
    dup = surv["case_id"].duplicated()
    if dup.any():
        raise CMTAError(
            f"{path}: patient {surv.loc[dup, 'case_id'].iloc[0]}: several rows with different "
            "survival; keep one survival record per patient"
        )
    surv = surv.set_index("case_id")
    surv, dropped = check_survival(surv, str(path), "patient", missing_survival, nonpositive_followup)
    if audit is not None:
        audit.append((str(path), f"patients found ({kind})", len(surv) + len(dropped), ""))
    return surv, dropped


def cbioportal_survival(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """case_id, survival_months, censorship of a cBioPortal patient table (OS_MONTHS,
    OS_STATUS)."""
    ids = df["PATIENT_ID"].astype(str).str.strip()
    status = df["OS_STATUS"].astype(str).str.strip().str.upper()
    cens = pd.Series(np.nan, index=df.index, dtype=object)
    cens[status.str.contains("DECEASED") | (status == "1") | status.str.startswith("1:")] = 0
    cens[status.str.contains("LIVING") | (status == "0") | status.str.startswith("0:")] = 1
    unknown = df["OS_STATUS"].notna() & cens.isna()
    if unknown.any():
        i = unknown.idxmax()
        raise CMTAError(
            f"{path}: patient {ids[i]}: OS_STATUS {df.at[i, 'OS_STATUS']!r} is neither "
            "LIVING nor DECEASED (0:LIVING / 1:DECEASED)"
        )
    surv = pd.DataFrame({"case_id": ids, "survival_months": df["OS_MONTHS"], "censorship": cens})
    surv = surv.drop_duplicates()
    return surv


def gdc_survival(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """case_id, survival_months, censorship of a GDC clinical table: per case the largest
    days_to_death (Dead) or follow-up (Alive), in months."""
    id_col = next((c for c in ("case_submitter_id", "submitter_id") if c in df.columns), None)
    fu_cols = [c for c in ("days_to_last_follow_up", "days_to_follow_up") if c in df.columns]
    need = ["vital_status", "days_to_death"]
    miss = [c for c in need if c not in df.columns] + ([] if id_col else ["case_submitter_id"])
    miss += [] if fu_cols else ["days_to_last_follow_up (or follow_ups.days_to_follow_up)"]
    if miss:
        raise CMTAError(
            f"{path}: not a cBioPortal patient table (PATIENT_ID, OS_MONTHS, OS_STATUS) "
            f"nor a GDC clinical table: missing column(s) {', '.join(miss)}"
        )
    ids = df[id_col].astype(str).str.strip()
    vital = df["vital_status"].astype(str).str.strip().str.lower()
    bad = df["vital_status"].notna() & ~vital.isin(["dead", "alive"])
    if bad.any():
        i = bad.idxmax()
        raise CMTAError(
            f"{path}: line {i + 2}, case {ids[i]}: vital_status {df.at[i, 'vital_status']!r} "
            "is neither Dead nor Alive"
        )
    cols = {}
    for col in ["days_to_death"] + fu_cols:
        num = pd.to_numeric(df[col], errors="coerce")
        badn = num.isna() & df[col].notna()
        if badn.any():
            i = badn.idxmax()
            raise CMTAError(f"{path}: line {i + 2}, case {ids[i]}: {col} {df.at[i, col]!r} is not a number")
        cols[col] = num
    follow_up = pd.concat([cols.pop(c) for c in fu_cols], axis=1).max(axis=1)
    per_row = pd.DataFrame({
        "case_id": ids, "vital": vital.where(df["vital_status"].notna()),
        "days_to_death": cols["days_to_death"], "days_to_last_follow_up": follow_up,
    })
    per_case = []
    for case, g in per_row.groupby("case_id", sort=False):
        v = set(g["vital"].dropna())
        if len(v) > 1:
            raise CMTAError(f"{path}: case {case}: its rows disagree on vital_status ({', '.join(sorted(v))})")
        v = v.pop() if v else None
        days = g["days_to_death"].max() if v == "dead" else g["days_to_last_follow_up"].max()
        cens = 0 if v == "dead" else 1 if v == "alive" else np.nan
        months = np.round(days / DAYS_PER_MONTH, 2) if pd.notna(days) else np.nan
        per_case.append((case, months, cens))
    surv = pd.DataFrame(per_case, columns=["case_id", "survival_months", "censorship"])
    return surv
