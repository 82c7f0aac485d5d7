"""Per-modality inputs (gene x sample files, GDC per-sample folders, MAFs) and a
clinical table joined on patient id into one :class:`~.data.GenomicData`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from . import gdc
from .aliases import read_aliases
from .audit import dropped_audit
from .cbioportal import read_gene_table
from .clinical import read_clinical
from .data import GenomicData
from .maf import DEFAULT_VARIANT_CLASSES, read_maf
from .samples import read_sample_table, samples_to_patients


def load_per_modality(
    rnaseq: str | os.PathLike | None = None,
    cnv: str | os.PathLike | None = None,
    maf: str | os.PathLike | None = None,
    clinical: str | os.PathLike | None = None,
    variant_classes=DEFAULT_VARIANT_CLASSES,
    missing_survival: str = "error",
    nonpositive_followup: str = "drop",
    sample_sheet: str | os.PathLike | None = None,
    rnaseq_unit: str = "tpm_unstranded",
    gene_aliases: str | os.PathLike | None = None,
    families: dict[str, list[str]] | None = None,
    sample_table: str | os.PathLike | None = None,
) -> GenomicData:
    """Join per-modality files on patient id; patients need every modality given.

    ``rnaseq``/``cnv``: a gene x sample file (:func:`read_gene_table`) or a folder of GDC
    per-sample files (STAR gene counts; gene-level copy number), joined through the GDC
    ``sample_sheet`` (``gdc.py``; ``rnaseq_unit`` picks the STAR column). ``maf``: a MAF
    or a folder of MAFs. ``gene_aliases``: see :func:`read_aliases`. ``families``: the
    family genes, for which a GDC gene-symbol collision is an error. ``sample_table``: a
    cBioPortal ``data_clinical_sample.txt`` mapping sample ids to patients
    (:func:`read_sample_table`). Patients missing a modality or survival are returned in
    ``dropped`` with the reason.
    """
    if clinical is None and missing_survival != "keep":
        raise CMTAError("per-modality input needs a clinical table (--clinical) for survival")
    aliases = read_aliases(gene_aliases)
    audit: list[tuple[str, str, int, str]] = []
    sample_map = read_sample_table(sample_table, audit)
    parts: list[tuple[str, pd.DataFrame]] = []
    reasons: dict[str, str] = {}
    for modality, path in (("rnaseq", rnaseq), ("cnv", cnv)):
        if path:
            values = _gene_values(path, modality, sample_sheet, rnaseq_unit, aliases, audit, families)
            m, r = samples_to_patients(values, modality, str(path), audit, sample_map)
            parts.append((modality, m)); reasons.update(r)
    if maf:
        m, r = read_maf(maf, variant_classes, aliases, audit, sample_map)
        parts.append(("mut", m)); reasons.update(r)
    if not parts:
        raise CMTAError("no genomic input: give a wide table or at least one of --rnaseq, --cnv, --maf")
    if clinical is None:  # new patients without follow-up (missing_survival="keep")
        surv = pd.DataFrame(columns=["survival_months", "censorship"], dtype=float)
        surv.index.name = "case_id"
        no_surv: dict[str, str] = {}
    else:
        surv, no_surv = read_clinical(clinical, missing_survival, nonpositive_followup, audit)
    everyone = set(surv.index) | set(no_surv) | set(reasons)
    for _, m in parts:
        everyone |= set(m.index)
    kept = set.intersection(*(set(m.index) for _, m in parts))
    if clinical is None:
        surv = pd.DataFrame(np.nan, index=sorted(kept), columns=["survival_months", "censorship"])
        surv.index.name = "case_id"
    kept = sorted(kept & set(surv.index))
    for p in sorted(everyone - set(kept)):
        if p in reasons:
            continue
        lacking = [name for name, m in parts if p not in m.index]
        if p in no_surv:  # survival first: a zero follow-up is listed as such
            reasons[p] = no_surv[p]
        elif lacking:
            reasons[p] = f"no genomics (no {'/'.join(lacking)} data)"
        else:
            reasons[p] = "no survival"
    matrix = pd.concat([m.loc[kept] for _, m in parts], axis=1)
    matrix.index.name = "case_id"
    dropped = pd.DataFrame(sorted(reasons.items()), columns=["case_id", "reason"])
    audit += dropped_audit("all inputs", dropped)
    audit.append(("all inputs", "patients kept (every modality and survival)", len(kept), ""))
    return GenomicData(matrix=matrix, survival=surv.loc[kept], dropped=dropped, audit=audit)


def _gene_values(path, modality, sample_sheet, rnaseq_unit, aliases, audit, families) -> pd.DataFrame:
    """Gene x sample values of one modality: a folder of GDC per-sample files or a
    gene x sample file."""
    if Path(path).is_dir():
        wanted = {g for genes in (families or {}).values() for g in genes}
        return gdc.read_gdc_folder(path, modality, sample_sheet, rnaseq_unit, aliases, audit, wanted)
    return read_gene_table(path, modality, aliases, audit)
