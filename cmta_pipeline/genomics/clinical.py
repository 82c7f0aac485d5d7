"""Survival per patient from clinical tables: cBioPortal's patient table, or the GDC's
``clinical.tsv`` (with its ``follow_up.tsv``: :mod:`.gdc_clinical`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from ..ids import check_ids
from .gdc_clinical import gdc_survival, is_gdc_clinical, is_gdc_follow_up
from .survival import check_survival
from .tables import NA_VALUES, leading_comment_lines, read_table

#: what a folder given as the clinical input holds: a GDC clinical download, extracted
GDC_CLINICAL_FILES = ("clinical.tsv", "follow_up.tsv")


def clinical_files(paths) -> list[Path]:
    """The clinical tables given: files, or a folder of an extracted GDC clinical
    download (its ``clinical.tsv`` and ``follow_up.tsv``)."""
    if paths is None:
        return []
    out = []
    for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        p = Path(p)
        if p.is_dir():
            found = [p / n for n in GDC_CLINICAL_FILES if (p / n).is_file()]
            if not found:
                raise CMTAError(f"{p}: a clinical folder must hold the GDC's clinical.tsv (and follow_up.tsv)")
            out += found
        else:
            out.append(p)
    return out


def read_clinical(
    path, missing_survival: str = "drop", nonpositive_followup: str = "drop", audit: list | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Survival per patient from clinical tables (one path, several, or a folder).

    cBioPortal (``data_clinical_patient.txt``): PATIENT_ID, OS_MONTHS, OS_STATUS
    (``1:DECEASED``/``0:LIVING`` or ``DECEASED``/``LIVING``); ``#`` header rows skipped.
    GDC ``clinical.tsv`` of any layout, with ``follow_up.tsv`` when given
    (:mod:`.gdc_clinical`); months = days / 30.44, rounded to 2 decimals as in the
    published tables. Patients without usable survival are handled by
    ``missing_survival`` (:func:`check_survival`: dropped with their reason by default).
    Returns (survival indexed by case_id, patient -> reason for those left out).
    """
    files = clinical_files(path)
    if not files:
        raise CMTAError("no clinical table given")
    tables = [(f, read_table(f, "clinical", dtype=str, na_values=NA_VALUES, keep_default_na=False)) for f in files]
    cbio = [(f, df) for f, df in tables if "PATIENT_ID" in df.columns]
    gdc = [(f, df) for f, df in tables if is_gdc_clinical(df)]
    follow = [(f, df) for f, df in tables if is_gdc_follow_up(df)]
    other = [f for f, df in tables if not any(df is d for _, d in cbio + gdc + follow)]
    if other:
        raise CMTAError(
            f"{other[0]}: not a cBioPortal patient table (PATIENT_ID, OS_MONTHS, OS_STATUS) nor a GDC "
            "clinical table (cases.submitter_id or case_submitter_id, vital_status, days_to_death, "
            "days_to_last_follow_up) nor its follow_up.tsv"
        )
    if cbio and (gdc or follow) or len(cbio) > 1 or (follow and not gdc):
        raise CMTAError(
            f"{', '.join(map(str, files))}: give one cBioPortal patient table, or the GDC clinical.tsv "
            "(with its follow_up.tsv)"
        )
    source = str(files[0]) if len(files) == 1 else ", ".join(map(str, files))
    if cbio:
        surv = cbioportal_survival(*cbio[0])
        if audit is not None:
            audit.append((str(cbio[0][0]), "patients found (cBioPortal patient table)", len(surv), ""))
    else:
        surv = gdc_survival(gdc, follow, audit)
    surv = surv.set_index("case_id")
    reasons = surv.pop("reason").replace("", np.nan)
    return check_survival(surv, source, "patient", missing_survival, nonpositive_followup, reasons)


def cbioportal_survival(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """case_id, survival_months, censorship, reason of a cBioPortal patient table
    (OS_MONTHS, OS_STATUS; the reason says which is missing)."""
    miss = [c for c in ("OS_STATUS", "OS_MONTHS") if c not in df.columns]
    if miss:
        pairs = sorted(c for c in df.columns if c.endswith("_STATUS") and c[:-7] + "_MONTHS" in df.columns)
        have = f"; it has {', '.join(p[:-7] + '_STATUS/_MONTHS' for p in pairs)}" if pairs else ""
        raise CMTAError(
            f"{path}: missing column(s) {', '.join(miss)} (overall survival, which CMTA models){have}"
        )
    ids = df["PATIENT_ID"].astype(str).str.strip()
    check_ids(ids, "PATIENT_ID", str(path), lines=df.index + 2 + leading_comment_lines(path))
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
    no_status, no_months = df["OS_STATUS"].isna(), df["OS_MONTHS"].isna()
    reason = np.select(
        [no_status & no_months, no_status, no_months],
        ["OS_STATUS and OS_MONTHS missing", "OS_STATUS missing",
         "OS_MONTHS missing (" + df["OS_STATUS"].astype(str) + ")"], default="")
    surv = pd.DataFrame({"case_id": ids, "survival_months": df["OS_MONTHS"], "censorship": cens, "reason": reason})
    surv = surv.drop_duplicates()
    dup = surv["case_id"].duplicated()
    if dup.any():
        raise CMTAError(
            f"{path}: patient {surv.loc[dup, 'case_id'].iloc[0]}: several rows with different "
            "survival; keep one survival record per patient"
        )
    return surv
