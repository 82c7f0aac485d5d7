"""Per-modality inputs (gene x sample files, GDC per-sample folders, MAFs, a cBioPortal
study folder) and clinical tables joined on patient id into one :class:`~.data.GenomicData`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from . import gdc
from .aliases import read_aliases
from .audit import dropped_audit
from .cbioportal import read_gene_table
from .cbioportal_study import Study, read_study, study_of_files
from .clinical import clinical_files, read_clinical
from .data import GenomicData
from .maf import DEFAULT_VARIANT_CLASSES, read_maf
from .samples import read_sample_table, samples_to_patients
from .survival import (
    NONPOSITIVE_REASON,
    missing_survival_error,
    unusable_survival_audit,
)
from .tables import examples

log = logging.getLogger(__name__)

STUDY_INPUTS = ("rnaseq", "cnv", "maf", "clinical", "samples")


def load_per_modality(
    rnaseq: str | os.PathLike | None = None,
    cnv: str | os.PathLike | None = None,
    maf: str | os.PathLike | None = None,
    clinical=None,
    variant_classes=DEFAULT_VARIANT_CLASSES,
    missing_survival: str = "drop",
    nonpositive_followup: str = "drop",
    sample_sheet: str | os.PathLike | None = None,
    rnaseq_unit: str = "tpm_unstranded",
    gene_aliases: str | os.PathLike | None = None,
    families: dict[str, list[str]] | None = None,
    sample_table: str | os.PathLike | None = None,
    study: str | os.PathLike | None = None,
    gene_panels: str | os.PathLike | None = None,
) -> GenomicData:
    """Join per-modality files on patient id; patients need every modality given.

    ``rnaseq``/``cnv``: a gene x sample file (:func:`read_gene_table`) or a folder of GDC
    per-sample files (STAR gene counts; gene-level copy number), joined through the GDC
    ``sample_sheet`` (``gdc.py``; the patient is each file's Case ID; ``rnaseq_unit``
    picks the STAR column). ``maf``: a MAF or a folder of MAFs. ``clinical``: one clinical
    table, several (the GDC's clinical.tsv and follow_up.tsv) or a folder of them.
    ``study``: a cBioPortal study folder; its files are used for every input not given
    (:mod:`.cbioportal_study`), and its case lists and gene panels say who was profiled
    for which genes (also when the files given lie in a study folder). ``gene_aliases``:
    see :func:`read_aliases`. ``families``: the family genes, for which a GDC gene-symbol
    collision is an error. ``sample_table``: a cBioPortal ``data_clinical_sample.txt``
    mapping sample ids to patients. ``missing_survival``: a patient without usable
    survival is dropped with its reason (default), an error when it has every modality
    (``"error"``), or kept with empty survival (``"keep"``). Patients missing a modality
    or survival are returned in ``dropped`` with the reason.
    """
    audit: list[tuple[str, str, int, str]] = []
    given = dict(rnaseq=rnaseq, cnv=cnv, maf=maf, clinical=clinical, samples=sample_table)
    st = _study(study, given, gene_panels, audit)
    if study is not None:
        for key in STUDY_INPUTS:
            if given[key] is None and key in st.files:
                given[key] = st.files[key]
    if not given["clinical"] and missing_survival != "keep":
        raise CMTAError("per-modality input needs a clinical table (--clinical) for survival")
    parts, reasons = _genomic_parts(given, st, variant_classes, sample_sheet, rnaseq_unit,
                                    read_aliases(gene_aliases), families, audit)
    if not given["clinical"]:  # new patients without follow-up (missing_survival="keep")
        surv = pd.DataFrame(columns=["survival_months", "censorship"], dtype=float)
        no_surv: dict[str, str] = {}
    else:
        reader = "drop" if missing_survival == "error" else missing_survival
        surv, no_surv = read_clinical(given["clinical"], reader, nonpositive_followup, audit)
        check_ids_match(parts, set(surv.index) | set(no_surv), given["clinical"])
    return _join(parts, reasons, surv, no_surv, missing_survival, given["clinical"], audit)


def _study(study, given: dict, gene_panels, audit: list) -> Study | None:
    """The study folder given, or the one the data files given lie in (for its case
    lists, gene panels and sample table)."""
    if study is not None:
        return read_study(study, gene_panels, audit)
    files = [given[k] for k in ("rnaseq", "cnv", "maf") if given[k] is not None and not Path(given[k]).is_dir()]
    root = study_of_files(files)
    if root is None:
        return None
    audit.append((str(root), "cBioPortal study folder of the files given: its case lists, gene panels "
                  "and (unless --clinical-samples) sample table are used", 1, ""))
    st = read_study(root, gene_panels, audit, files_used=False)
    if given["samples"] is None and "samples" in st.files:
        given["samples"] = st.files["samples"]
    return st


def _genomic_parts(given, st, variant_classes, sample_sheet, rnaseq_unit, aliases, families, audit):
    """(modality, patient x GENE_<modality> matrix) of each genomic input, and the
    patients left out of them with why."""
    sample_map = read_sample_table(given["samples"], audit)
    parts: list[tuple[str, pd.DataFrame]] = []
    reasons: dict[str, str] = {}
    for modality in ("rnaseq", "cnv"):
        path = given[modality]
        if not path:
            continue
        if Path(path).is_dir():
            wanted = {g for genes in (families or {}).values() for g in genes}
            values, sheet_map = gdc.read_gdc_folder(path, modality, sample_sheet, rnaseq_unit, aliases, audit, wanted)
        else:
            values, sheet_map = read_gene_table(path, modality, aliases, audit), {}
        prof = st.profiled(modality, path) if st else None
        if prof is not None:
            values = prof.mask(values, audit, str(path))
        m, r = samples_to_patients(values, modality, str(path), audit, {**sample_map, **sheet_map})
        parts.append((modality, m))
        reasons.update(r)
    if given["maf"]:
        path = given["maf"]
        m, r = read_maf(path, variant_classes, aliases, audit, sample_map,
                        profiled=st.profiled("maf", path) if st else None,
                        sample_sheet=sample_sheet if Path(path).is_dir() else None)
        parts.append(("mut", m))
        reasons.update(r)
    if not parts:
        raise CMTAError("no genomic input: give a wide table or at least one of --rnaseq, --cnv, --maf")
    return parts, reasons


def check_ids_match(parts, clinical_ids: set[str], clinical) -> None:
    """Patients of the genomic files must be the clinical table's: when none, or fewer
    than half of them, have a clinical row, the ids do not match (a non-TCGA project
    read without its sample sheet, a study's sample ids without its sample table)."""
    genomic = set().union(*(set(m.index) for _, m in parts))
    matched = genomic & clinical_ids
    if not genomic or 2 * len(matched) >= len(genomic):
        return
    files = ", ".join(map(str, clinical_files(clinical)))
    raise CMTAError(
        f"{files}: only {len(matched)} of the {len(genomic)} patients of the genomic files have a "
        f"clinical row: the ids do not match (genomic ids without one: {examples(sorted(genomic - clinical_ids), 3)}; "
        f"clinical ids: {examples(sorted(clinical_ids - genomic) or sorted(clinical_ids), 3)}). GDC files: give "
        "the sample sheet (--gdc-sample-sheet), whose Case ID is the patient; cBioPortal samples whose ids "
        "do not start with the patient's: --clinical-samples data_clinical_sample.txt or --cbioportal STUDY_DIR"
    )


def _join(parts, reasons, surv, no_surv, missing_survival, clinical, audit) -> GenomicData:
    """Patients with every modality and survival (as ``missing_survival`` says)."""
    everyone = set(surv.index) | set(no_surv) | set(reasons)
    for _, m in parts:
        everyone |= set(m.index)
    with_genomics = set.intersection(*(set(m.index) for _, m in parts))
    unusable = {p: r for p, r in no_surv.items() if not r.startswith(NONPOSITIVE_REASON)}
    source = ", ".join(map(str, clinical_files(clinical))) or "all inputs"
    if missing_survival == "error":
        bad = sorted(with_genomics & set(unusable))
        if bad:
            raise missing_survival_error(source, f"patient {bad[0]}", unusable[bad[0]], len(bad))
    if not clinical:
        surv = pd.DataFrame(np.nan, index=sorted(with_genomics), columns=["survival_months", "censorship"])
        surv.index.name = "case_id"
    kept = sorted(with_genomics & set(surv.index))
    for p in sorted(everyone - set(kept)):
        if p in reasons:
            continue
        lacking = [name for name, m in parts if p not in m.index]
        if p in no_surv:  # survival first: a zero follow-up is listed as such
            reasons[p] = no_surv[p]
        elif lacking:
            reasons[p] = f"no genomics (no {'/'.join(lacking)} data)"
        else:
            reasons[p] = "no clinical row"
    if not kept:
        counts = ", ".join(f"{name} {len(m)}" for name, m in parts)
        raise CMTAError(
            f"no patient has every modality given and usable survival (patients per modality: {counts}; "
            f"with all of them: {len(with_genomics)}; with usable survival: {len(surv)}); see the reasons "
            "with --missing-survival keep, or check the inputs"
        )
    matrix = pd.concat([m.loc[kept] for _, m in parts], axis=1)
    matrix.index.name = "case_id"
    dropped = pd.DataFrame(sorted(reasons.items()), columns=["case_id", "reason"])
    audit += dropped_audit("all inputs", dropped)
    if missing_survival == "keep":
        blank = surv.loc[kept, "survival_months"].isna()
        audit += unusable_survival_audit("all inputs", dict.fromkeys(blank.index[blank], "no usable survival"), "keep")
        audit.append(("all inputs", "patients kept (every modality; survival empty where unusable: "
                      "--missing-survival keep, for prediction only)", len(kept), ""))
    else:
        audit += unusable_survival_audit("all inputs", unusable, missing_survival)
        audit.append(("all inputs", "patients kept (every modality and survival)", len(kept), ""))
    if unusable and missing_survival != "keep":
        log.warning("%d patients without usable survival dropped (reasons in dropped.tsv and audit.tsv)", len(unusable))
    return GenomicData(matrix=matrix, survival=surv.loc[kept], dropped=dropped, audit=audit)
