"""Samples to patients: the patient and sample type of a sample id (TCGA and TARGET
barcodes, the GDC's sample-type names, a cBioPortal sample table or a GDC sample sheet),
one tumour sample per patient, and the audit of that choice.

Sample types are the TCGA sample-type codes (01 primary tumour ... 09; 10-19 normal;
20-29 control; 40-42 recurrent or post-treatment blood cancer; 50+ cell lines and
xenografts: https://gdc.cancer.gov/resources-tcga-users/tcga-code-tables/sample-type-codes).
A sample is used when its type is a tumour (:func:`is_tumour`); among a patient's tumour
samples a primary one wins, then a recurrence, then a metastasis (:data:`TUMOUR_RANK`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from .tables import NA_VALUES, examples, read_table

TCGA_SAMPLE = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})(?:-(\d{2}))?", re.IGNORECASE)
#: TARGET barcodes (TARGET-20-PARLXL-09A-01R): project code, 6-character participant, sample type
TARGET_SAMPLE = re.compile(r"^(TARGET-\d{2}-[A-Z0-9]{6})(?:-(\d{2}))?", re.IGNORECASE)
BARCODES = (TCGA_SAMPLE, TARGET_SAMPLE)

#: The GDC's ``Sample Type`` names (gdcdictionary ``sample.yaml``) with their TCGA code;
#: "Tumor" (a tumour of unspecified kind, as CPTAC labels its samples) ranks as primary.
#: Any other name (Slides, Cell Lines' relatives, Unknown, Not Reported, ...) is not used.
GDC_SAMPLE_TYPES = {
    "primary tumor": 1, "primary solid tumor": 1, "tumor": 1,
    "recurrent tumor": 2, "recurrent solid tumor": 2,
    "primary blood derived cancer - peripheral blood": 3,
    "recurrent blood derived cancer - bone marrow": 4,
    "additional - new primary": 5, "metastatic": 6, "additional metastatic": 7,
    "human tumor original cells": 8, "primary blood derived cancer - bone marrow": 9,
    "blood derived normal": 10, "solid tissue normal": 11, "buccal cell normal": 12,
    "ebv immortalized normal": 13, "bone marrow normal": 14, "control analyte": 20,
    "recurrent blood derived cancer - peripheral blood": 40,
    "blood derived cancer - bone marrow, post-treatment": 41,
    "blood derived cancer - peripheral blood, post-treatment": 42,
    "cell lines": 50, "primary xenograft tissue": 60, "cell line derived xenograft tissue": 61,
}
#: ``Tumor Descriptor`` of a ``Tissue Type`` Tumor sample (the GDC's sample sheets since
#: 2025 have these instead of ``Sample Type``); other descriptors (NOS, Unknown, Not
#: Reported, Not Applicable) rank as primary, Premalignant and Xenograft are not used.
TUMOR_DESCRIPTORS = {
    "primary": 1, "recurrence": 2, "new primary": 5, "metastatic": 6,
    "premalignant": 99, "xenograft": 60,
}
OTHER = 99  # neither tumour nor normal: not used

#: sample id -> (patient id, sample-type code), from a cBioPortal sample table or a GDC
#: sample sheet.
SampleMap = dict[str, tuple[str, int]]


#: Which tumour sample of a patient is used: primary (01 solid, 03 peripheral blood, 09
#: bone marrow), then recurrent (02, 04, 40), additional new primary (05), metastatic (06,
#: 07), human tumour original cells (08), post-treatment blood cancer (41, 42).
TUMOUR_RANK = {code: rank for rank, code in enumerate((1, 3, 9, 2, 4, 40, 5, 6, 7, 8, 41, 42))}


def is_tumour(code: int) -> bool:
    """Tumour sample types: 01-09 and 40-42 (recurrent and post-treatment blood cancer)."""
    return code in TUMOUR_RANK


def tumour_rank(code: int) -> int:
    """The order in which a patient's tumour samples are preferred (:data:`TUMOUR_RANK`)."""
    return TUMOUR_RANK.get(code, len(TUMOUR_RANK))


def sample_type_code(name) -> int:
    """The code of a GDC ``Sample Type`` name (:data:`GDC_SAMPLE_TYPES`; 99 if unknown)."""
    return GDC_SAMPLE_TYPES.get(str(name).strip().lower(), OTHER)


def tissue_type_code(tissue, descriptor) -> int:
    """The code of a GDC ``Tissue Type`` + ``Tumor Descriptor`` pair: Tumor by its
    descriptor (:data:`TUMOR_DESCRIPTORS`), Normal 11, anything else 99."""
    tissue = str(tissue).strip().lower()
    if tissue == "normal":
        return 11
    if tissue != "tumor":
        return OTHER
    return TUMOR_DESCRIPTORS.get(str(descriptor).strip().lower(), 1)


def barcode_code(sample: str) -> int | None:
    """The sample-type code of a TCGA or TARGET barcode, None for other ids."""
    for pattern in BARCODES:
        m = pattern.match(str(sample).strip())
        if m and m.group(2):
            return int(m.group(2))
    return None


def patient_of_sample(barcode: str, sample_map: SampleMap | None = None) -> tuple[str, int]:
    """(patient id, sample-type code) of a sample id.

    A sample listed in ``sample_map`` takes its patient and type from there. Otherwise
    TCGA and TARGET barcodes give the patient (``TCGA-XX-XXXX``, ``TARGET-NN-XXXXXX``)
    and the two-digit sample type; 1 is assumed when absent. Other ids are taken as
    patient ids (type 1): give a sample table or sample sheet for them.
    """
    bc = str(barcode).strip()
    if sample_map and bc in sample_map:
        return sample_map[bc]
    for pattern in BARCODES:
        m = pattern.match(bc)
        if m:
            return m.group(1).upper(), int(m.group(2)) if m.group(2) else 1
    return bc, 1


def choose_samples(barcodes, sample_map: SampleMap | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """One sample per patient: (patient -> chosen barcode, patient -> drop reason).

    Tumour samples only (:func:`is_tumour`); among several, primary before recurrent
    before metastatic (:data:`TUMOUR_RANK`), ties broken by barcode order (vial A before
    B, lower portion first).
    """
    best: dict[str, tuple[int, str]] = {}
    other: dict[str, set[int]] = {}
    for bc in barcodes:
        patient, stype = patient_of_sample(bc, sample_map)
        if not is_tumour(stype):
            other.setdefault(patient, set()).add(stype)
            continue
        key = (tumour_rank(stype), str(bc))
        if patient not in best or key < best[patient]:
            best[patient] = key
    chosen = {p: bc for p, (_, bc) in best.items()}
    reasons = {
        p: "no genomics (normal-tissue samples only)" if all(10 <= c <= 19 for c in codes)
        else "no genomics (no tumour sample: normal, control, cell-line or xenograft samples only)"
        for p, codes in other.items() if p not in chosen
    }
    return chosen, reasons


def cbioportal_sample_code(sample: str, kind) -> int:
    """The sample-type code of a cBioPortal sample: the barcode's (TCGA), else from its
    SAMPLE_TYPE: normal 11, metastasis 6, recurrence 2, anything else (primary) 1."""
    code = barcode_code(sample)
    if code is not None:
        return code
    kind = "" if pd.isna(kind) else str(kind).lower()
    return 11 if "normal" in kind else 6 if "metasta" in kind else 2 if "recurr" in kind else 1


def read_sample_table(path: str | os.PathLike | None, audit: list | None = None) -> SampleMap:
    """Sample id -> (patient id, sample-type code) from a cBioPortal sample table
    (``data_clinical_sample.txt``: PATIENT_ID, SAMPLE_ID, optionally SAMPLE_TYPE).

    For studies whose sample ids do not contain the patient id (TCGA's do). The type is
    :func:`cbioportal_sample_code`'s.
    """
    if path is None:
        return {}
    path = Path(path)
    df = read_table(path, "sample", dtype=str, na_values=NA_VALUES, keep_default_na=False)
    miss = [c for c in ("PATIENT_ID", "SAMPLE_ID") if c not in df.columns]
    if miss:
        raise CMTAError(f"{path}: missing column(s) {', '.join(miss)} (a cBioPortal sample table)")
    kinds = df["SAMPLE_TYPE"] if "SAMPLE_TYPE" in df.columns else pd.Series("", index=df.index)
    out: SampleMap = {}
    for i, (patient, sample, kind) in enumerate(zip(df["PATIENT_ID"], df["SAMPLE_ID"], kinds)):
        if pd.isna(patient) or pd.isna(sample):
            raise CMTAError(f"{path}: row {i + 1} after the header: PATIENT_ID or SAMPLE_ID is empty")
        patient, sample = patient.strip(), sample.strip()
        if sample in out and out[sample][0] != patient:
            raise CMTAError(f"{path}: sample {sample} belongs to two patients ({out[sample][0]}, {patient})")
        out[sample] = (patient, cbioportal_sample_code(sample, kind))
    if audit is not None:
        audit.append((str(path), "samples mapped to patients", len(out), f"{len({p for p, _ in out.values()})} patients"))
    return out


def sample_audit(
    source: str, barcodes, chosen: dict[str, str], sample_map: SampleMap | None = None
) -> list[tuple[str, str, int, str]]:
    """Audit rows of the sample -> patient step: samples found, patients, and every
    sample not used with why (not a tumour; another sample of the patient chosen)."""
    barcodes = list(dict.fromkeys(map(str, barcodes)))
    used = set(chosen.values())
    of = {b: patient_of_sample(b, sample_map) for b in barcodes}
    normal = [b for b in barcodes if 10 <= of[b][1] <= 19]
    other = [b for b in barcodes if not is_tumour(of[b][1]) and not 10 <= of[b][1] <= 19]
    others = [f"{b} (chose {chosen[of[b][0]]})" for b in barcodes if b not in used and is_tumour(of[b][1])]
    rows = [
        (source, "samples found", len(barcodes), ""),
        (source, "patients with a tumour sample", len(chosen), ""),
    ]
    if normal:
        rows.append((source, "samples not used: normal tissue", len(normal), examples(normal)))
    if other:
        rows.append((source, "samples not used: not a tumour (control, cell line, xenograft, other)",
                     len(other), examples(other)))
    if others:
        rows.append((
            source, "samples not used: another sample of the patient chosen", len(others),
            "rule: tumour samples only, primary before recurrent before metastatic, then "
            "barcode order; " + examples(others, 20),
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
