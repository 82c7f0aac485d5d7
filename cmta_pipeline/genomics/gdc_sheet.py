"""The GDC sample sheet (``gdc_sample_sheet.<date>.tsv``): which case and sample each
downloaded file belongs to, for TCGA and every other GDC project.

Two layouts are read: up to 2024 ``File ID, File Name, Data Category, Data Type, Project
ID, Case ID, Sample ID, Sample Type``; since 2025 ``Tissue Type, Tumor Descriptor,
Specimen Type, Preservation Method`` instead of ``Sample Type``. A file of several
samples (a paired tumour/normal file) lists them comma-separated, in no fixed order, in
``Case ID``, ``Sample ID`` and each type column. The patient is the ``Case ID`` (for
every project: TCGA-XX-XXXX, TARGET-20-PARLXL, C3L-02707, ...); a sample's type comes
from ``Sample Type`` (the GDC's names) or ``Tissue Type``/``Tumor Descriptor``, and from
the barcode only when the sheet has neither (:mod:`.samples`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from .samples import SampleMap, barcode_code, is_tumour, sample_type_code, tissue_type_code, tumour_rank
from .tables import examples, read_table

SHEET_COLUMNS = ("File Name", "Case ID", "Sample ID")


def _split(cell) -> list[str]:
    return [] if pd.isna(cell) else [s.strip() for s in str(cell).split(",") if s.strip()]


def _row_samples(row: pd.Series, n_row: int, path: Path) -> list[tuple[str, str, int]]:
    """(sample, case, sample-type code) of every sample of one sheet row."""
    samples = _split(row["Sample ID"])
    cases = _split(row["Case ID"])
    if len(cases) == 1:
        cases = cases * len(samples)
    if not samples or len(cases) != len(samples):
        raise CMTAError(
            f"{path}: line {n_row}: Sample ID {row['Sample ID']!r} and Case ID {row['Case ID']!r} "
            "do not list the same number of samples"
        )

    def column(name):  # one value per sample ("Blood Derived Cancer - Bone Marrow, Post-treatment" is one)
        if name not in row.index or pd.isna(row[name]):
            return None
        vals = [str(row[name]).strip()] if len(samples) == 1 else _split(row[name])
        return vals if len(vals) == len(samples) else None

    names, tissue, descr = column("Sample Type"), column("Tissue Type"), column("Tumor Descriptor")
    out = []
    for i, (sample, case) in enumerate(zip(samples, cases)):
        if names is not None:
            code = sample_type_code(names[i])
        elif tissue is not None:
            code = tissue_type_code(tissue[i], descr[i] if descr is not None else "")
        else:
            code = barcode_code(sample) or 1
        out.append((sample, case, code))
    return out


def read_sample_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """The GDC sample sheet with, per file: ``file_name``, ``sample_id`` (the file's tumour
    sample: of several, primary before recurrent before metastatic, then the order listed; a file without a
    tumour sample keeps its first sample), ``case_id`` (that sample's Case ID),
    ``type_code``, and ``samples``: every (sample, case, code) of the row."""
    path = Path(path)
    df = read_table(path, "GDC sample sheet", dtype=str)
    miss = [c for c in SHEET_COLUMNS if c not in df.columns]
    if miss:
        raise CMTAError(
            f"{path}: missing column(s) {', '.join(miss)} (the GDC sample sheet has File ID, "
            "File Name, Data Category, Data Type, Project ID, Case ID, Sample ID and Sample "
            "Type or Tissue Type, Tumor Descriptor, ...)"
        )
    dup = df["File Name"].duplicated()
    if dup.any():
        line = int(np.flatnonzero(dup)[0]) + 2
        raise CMTAError(f"{path}: line {line}: file {df['File Name'][dup].iloc[0]} is listed twice")
    rows = [_row_samples(row, i + 2, path) for i, (_, row) in enumerate(df.iterrows())]
    chosen = []
    for samples in rows:
        tumours = [s for s in samples if is_tumour(s[2])]
        chosen.append(min(tumours, key=lambda s: tumour_rank(s[2])) if tumours else samples[0])
    df["file_name"] = df["File Name"].str.strip()
    df["sample_id"] = [c[0] for c in chosen]
    df["case_id"] = [c[1] for c in chosen]
    df["type_code"] = [c[2] for c in chosen]
    df["samples"] = rows
    return df


def sheet_sample_map(sheet: pd.DataFrame, path) -> SampleMap:
    """Sample id -> (Case ID, sample-type code) of every sample the sheet lists."""
    out: SampleMap = {}
    for samples in sheet["samples"]:
        for sample, case, code in samples:
            if sample in out and out[sample][0] != case:
                raise CMTAError(f"{path}: sample {sample} is listed under two cases ({out[sample][0]}, {case})")
            out[sample] = (case, code)
    return out


def matched_files(
    folder: Path, marker: str, data_type: str, sample_sheet: str | os.PathLike, what: str,
    audit: list | None = None,
) -> tuple[pd.DataFrame, dict[str, Path], SampleMap]:
    """(the sample-sheet rows of the files of one kind found under ``folder``, one per
    sample; file name -> path; the sheet's sample map). A file is of the kind when its
    name contains ``marker`` or its Data Type is ``data_type``. Files the sheet lists but
    the folder lacks, files the sheet does not list, and second files of one sample (the
    first by file name is used) go to the audit."""
    sheet = read_sample_sheet(sample_sheet)
    sample_map = sheet_sample_map(sheet, sample_sheet)
    of_kind = sheet["file_name"].str.contains(marker, regex=False)
    if "Data Type" in sheet.columns:
        of_kind |= sheet["Data Type"].eq(data_type)
    sheet = sheet[of_kind]
    on_disk = {p.name: p for p in folder.rglob("*") if p.is_file() and marker in p.name}
    listed = set(sheet["file_name"])
    absent, unlisted = sorted(listed - set(on_disk)), sorted(set(on_disk) - listed)
    sheet = sheet[sheet["file_name"].isin(set(on_disk))]
    if sheet.empty:
        raise CMTAError(
            f"{folder}: none of its {len(on_disk)} *{marker}* files is listed in the sample sheet "
            f"{sample_sheet} (match by File Name)"
        )
    sheet = sheet.sort_values("file_name", kind="stable")
    second = sheet["sample_id"].duplicated()
    if audit is not None:
        src = str(folder)
        if absent:
            audit.append((src, "files in the sample sheet but not in the folder", len(absent), examples(absent)))
        if unlisted:
            audit.append((src, "files not in the sample sheet (not used)", len(unlisted), examples(unlisted)))
        if second.any():
            dups = [f"{n} ({s})" for n, s in zip(sheet.loc[second, "file_name"], sheet.loc[second, "sample_id"])]
            audit.append((src, f"{what} files not used: another file of the same sample (the first by file name is used)",
                          int(second.sum()), examples(dups)))
    return sheet[~second], on_disk, sample_map
