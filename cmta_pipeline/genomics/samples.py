"""Samples to patients: the patient and sample type of a barcode (TCGA codes, or a
cBioPortal sample table), one tumour sample per patient, and the audit of that choice."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from .tables import NA_VALUES, examples, read_table

TCGA_SAMPLE = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})(?:-(\d{2}))?", re.IGNORECASE)


#: sample id -> (patient id, sample-type code), from a cBioPortal sample table.
SampleMap = dict[str, tuple[str, int]]


def patient_of_sample(barcode: str, sample_map: SampleMap | None = None) -> tuple[str, int]:
    """(patient id, sample-type code) of a sample barcode.

    A sample listed in ``sample_map`` (:func:`read_sample_table`) takes its patient from
    there. Otherwise TCGA barcodes give ``TCGA-XX-XXXX`` and the two-digit sample type (01
    primary tumour ... 09; 10-19 normal; 20+ control); 1 is assumed when absent. Other ids
    are taken as patient ids (type 1).
    """
    if sample_map and str(barcode).strip() in sample_map:
        return sample_map[str(barcode).strip()]
    m = TCGA_SAMPLE.match(str(barcode).strip())
    if not m:
        return str(barcode).strip(), 1
    return m.group(1).upper(), int(m.group(2)) if m.group(2) else 1


def choose_samples(barcodes, sample_map: SampleMap | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """One sample per patient: (patient -> chosen barcode, patient -> drop reason).

    Tumour samples (type < 10) only; among several, the lowest sample type wins
    (01 primary tumour before 02 recurrent, 03 blood primary, 06 metastasis, ...), ties
    broken by barcode order (vial A before B, lower portion first).
    """
    best: dict[str, tuple[int, str]] = {}
    normal_only: set[str] = set()
    for bc in barcodes:
        patient, stype = patient_of_sample(bc, sample_map)
        if stype >= 10:
            normal_only.add(patient)
            continue
        key = (stype, str(bc))
        if patient not in best or key < best[patient]:
            best[patient] = key
    chosen = {p: bc for p, (_, bc) in best.items()}
    reasons = {p: "no genomics (normal-tissue samples only)" for p in normal_only - set(chosen)}
    return chosen, reasons


def read_sample_table(path: str | os.PathLike | None, audit: list | None = None) -> SampleMap:
    """Sample id -> (patient id, sample-type code) from a cBioPortal sample table
    (``data_clinical_sample.txt``: PATIENT_ID, SAMPLE_ID, optionally SAMPLE_TYPE).

    For studies whose sample ids do not contain the patient id (TCGA's do). The type is
    the barcode's for TCGA ids, else from SAMPLE_TYPE: normal 11, metastasis 6,
    recurrence 2, anything else (primary) 1.
    """
    if path is None:
        return {}
    path = Path(path)
    df = read_table(path, "sample", dtype=str, na_values=NA_VALUES, keep_default_na=False)
    miss = [c for c in ("PATIENT_ID", "SAMPLE_ID") if c not in df.columns]
    if miss:
        raise CMTAError(f"{path}: missing column(s) {', '.join(miss)} (a cBioPortal sample table)")
    out: SampleMap = {}
    for i, (patient, sample) in enumerate(zip(df["PATIENT_ID"], df["SAMPLE_ID"])):
        if pd.isna(patient) or pd.isna(sample):
            raise CMTAError(f"{path}: row {i + 1} after the header: PATIENT_ID or SAMPLE_ID is empty")
        patient, sample = patient.strip(), sample.strip()
        kind = str(df["SAMPLE_TYPE"].iloc[i]).lower() if "SAMPLE_TYPE" in df.columns else ""
        m = TCGA_SAMPLE.match(sample)
        if m and m.group(2):
            stype = int(m.group(2))
        else:
            stype = 11 if "normal" in kind else 6 if "metasta" in kind else 2 if "recurr" in kind else 1
        if sample in out and out[sample][0] != patient:
            raise CMTAError(f"{path}: sample {sample} belongs to two patients ({out[sample][0]}, {patient})")
        out[sample] = (patient, stype)
    if audit is not None:
        audit.append((str(path), "samples mapped to patients", len(out), f"{len({p for p, _ in out.values()})} patients"))
    return out


def sample_audit(
    source: str, barcodes, chosen: dict[str, str], sample_map: SampleMap | None = None
) -> list[tuple[str, str, int, str]]:
    """Audit rows of the sample -> patient step: samples found, patients, and every
    sample not used with why (normal tissue; another sample of the patient chosen)."""
    barcodes = list(dict.fromkeys(map(str, barcodes)))
    used = set(chosen.values())
    of = {b: patient_of_sample(b, sample_map) for b in barcodes}
    normal = [b for b in barcodes if of[b][1] >= 10]
    others = [f"{b} (chose {chosen[of[b][0]]})" for b in barcodes if b not in used and of[b][1] < 10]
    rows = [
        (source, "samples found", len(barcodes), ""),
        (source, "patients with a tumour sample", len(chosen), ""),
    ]
    if normal:
        rows.append((source, "samples not used: normal tissue", len(normal), examples(normal)))
    if others:
        rows.append((
            source, "samples not used: another sample of the patient chosen", len(others),
            "rule: tumour samples only, lowest sample type first (01 primary), then barcode "
            "order; " + examples(others, 20),
        ))
    return rows


def samples_to_patients(
    values: pd.DataFrame, modality: str, source: str, audit: list | None = None,
    sample_map: SampleMap | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Gene x sample ``values`` as patient x ``GENE_<modality>``, one sample per patient
    (:func:`choose_samples`). Returns (matrix, patient -> drop reason)."""
    chosen, reasons = choose_samples(values.columns, sample_map)
    if audit is not None:
        audit.extend(sample_audit(source, values.columns, chosen, sample_map))
    mat = values[list(chosen.values())].T
    mat.index = list(chosen.keys())
    mat.columns = [f"{g}_{modality}" for g in mat.columns]
    mat.index.name = "case_id"
    return mat, reasons
