"""A cBioPortal study folder as downloaded (``cmta genomics --cbioportal STUDY_DIR``).

File names vary between studies (``data_CNA.txt``, ``data_cna.txt``,
``data_cna_discrete.txt``; ``data_mutations.txt``, ``data_mutations_extended.maf``;
``data_clinical_patient(s).txt``), so the study's ``meta_*.txt`` files say which data file
is what (``genetic_alteration_type``, ``datatype``, ``stable_id``, ``data_filename``;
https://docs.cbioportal.org/file-formats/):

* clinical: ``CLINICAL`` / ``PATIENT_ATTRIBUTES``; the sample table (each sample's
  patient and type): ``CLINICAL`` / ``SAMPLE_ATTRIBUTES``;
* copy number: ``COPY_NUMBER_ALTERATION`` with ``DISCRETE`` or ``DISCRETE_LONG`` (never
  ``LOG2-VALUE``, ``CONTINUOUS`` or ``SEG``), stable id ``gistic``, then ``cna``,
  ``cna_consensus``, ``cna_rae``, then any other;
* mutations: ``MUTATION_EXTENDED`` / ``MAF`` (not a ``*_uncalled`` profile);
* expression: ``MRNA_EXPRESSION``: RNA-seq before microarray; z-scores before values
  (MCAT's and CMTA's tables carry z-scores), those against all samples first.

The case lists and the gene panel matrix say who was profiled, and for which genes
(:mod:`.panels`). A file given explicitly (``--rnaseq`` ...) replaces the study's; a data
file given on its own that lies in a study folder (one with ``meta_study.txt``) is read
with that study's case lists, panels and sample table all the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CMTAError
from .panels import (
    Profiled,
    panel_from_sample_table,
    read_case_list,
    read_meta,
    read_panel_genes,
    read_panel_matrix,
)
from .tables import examples

CNA_DATATYPES = ("DISCRETE", "DISCRETE_LONG")
CNA_STABLE_IDS = ("gistic", "cna", "cna_consensus", "cna_rae")


@dataclass
class Study:
    """The data files of a study folder and who was profiled for what."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)  # rnaseq, cnv, maf, clinical, samples
    stable_ids: dict[str, str] = field(default_factory=dict)
    mutations: Profiled = field(default_factory=Profiled)
    cna: Profiled = field(default_factory=Profiled)

    def profiled(self, modality: str, path) -> Profiled | None:
        """The profile of ``path`` when it is the study's file of ``modality``."""
        mine = self.files.get(modality)
        if mine is None or path is None or Path(path).resolve() != mine.resolve():
            return None
        return self.mutations if modality == "maf" else self.cna if modality == "cnv" else None


def is_study(folder) -> bool:
    return folder is not None and (Path(folder) / "meta_study.txt").is_file()


def study_of_files(paths) -> Path | None:
    """The one study folder the given data files lie in (None if none, or several)."""
    found = {Path(p).resolve().parent for p in paths if p is not None and is_study(Path(p).resolve().parent)}
    return found.pop() if len(found) == 1 else None


def _rnaseq_rank(meta: dict) -> tuple:
    sid = meta.get("stable_id", "").lower()
    rnaseq = any(k in sid for k in ("rna_seq", "mrna_seq", "rnaseq"))
    zscore = meta.get("datatype", "").upper() == "Z-SCORE"
    return (not rnaseq, not zscore, "all_sample" not in sid, sid)


def _choose(root: Path, metas: list[tuple[Path, dict]], audit: list | None) -> dict[str, tuple[Path, dict]]:
    """Modality -> (meta file, its keys) of the profile used."""
    def kind(m, alteration, datatypes=None):
        return m.get("genetic_alteration_type", "").upper() == alteration and (
            datatypes is None or m.get("datatype", "").upper() in datatypes)

    cands = {
        "clinical": [x for x in metas if kind(x[1], "CLINICAL", ("PATIENT_ATTRIBUTES", "MIXED_ATTRIBUTES"))],
        "samples": [x for x in metas if kind(x[1], "CLINICAL", ("SAMPLE_ATTRIBUTES",))],
        "cnv": sorted(
            (x for x in metas if kind(x[1], "COPY_NUMBER_ALTERATION", CNA_DATATYPES)),
            key=lambda x: (CNA_STABLE_IDS.index(x[1].get("stable_id", "")) if x[1].get("stable_id") in CNA_STABLE_IDS
                           else len(CNA_STABLE_IDS), x[0].name)),
        "maf": [x for x in metas if kind(x[1], "MUTATION_EXTENDED") and not x[1].get("stable_id", "").endswith("_uncalled")],
        "rnaseq": sorted((x for x in metas if kind(x[1], "MRNA_EXPRESSION", ("Z-SCORE", "CONTINUOUS"))),
                         key=lambda x: _rnaseq_rank(x[1])),
        "panel_matrix": [x for x in metas if kind(x[1], "GENE_PANEL_MATRIX")],
    }
    chosen = {}
    for modality, found in cands.items():
        if not found:
            continue
        chosen[modality] = found[0]
        if audit is not None and modality != "panel_matrix":
            meta = found[0][1]
            detail = f"{found[0][0].name}: {meta.get('genetic_alteration_type')} {meta.get('datatype')}"
            detail += f" {meta['stable_id']}" if meta.get("stable_id") else ""
            if len(found) > 1:
                detail += f"; not used: {examples([x[1].get('data_filename', x[0].name) for x in found[1:]])}"
            audit.append((str(root), f"study file for {modality}: {meta.get('data_filename')}", 1, detail))
    return chosen


def read_study(
    root: str | os.PathLike, gene_panels: str | os.PathLike | None = None, audit: list | None = None,
    files_used: bool = True,
) -> Study:
    """The study folder ``root``: its data files by kind, and who was profiled for
    mutations and copy number (case lists ``<study>_sequenced`` and ``<study>_cna``, the
    gene panel matrix, or the sample table's GENE_PANEL column; panel gene lists from the
    folder and ``gene_panels``). ``files_used``: the audit names the data file chosen for
    each input (not when the study only lends its case lists to files given)."""
    root = Path(root)
    if not root.is_dir():
        raise CMTAError(f"cBioPortal study folder not found: {root}")
    if not is_study(root):
        raise CMTAError(f"{root}: not a cBioPortal study folder (no meta_study.txt)")
    metas = [(p, read_meta(p)) for p in sorted(root.glob("meta_*.txt")) if p.name != "meta_study.txt"]
    chosen = _choose(root, metas, audit if files_used else None)
    study = Study(root=root)
    for modality, (meta_path, meta) in chosen.items():
        if "data_filename" not in meta:
            raise CMTAError(f"{meta_path}: no data_filename line")
        data = root / meta["data_filename"]
        if not data.is_file():
            raise CMTAError(f"{meta_path}: its data file {data} is missing from the study folder")
        study.files[modality] = data
        study.stable_ids[modality] = meta.get("stable_id", "")
    _profiles(study, gene_panels, audit)
    return study


def _profiles(study: Study, gene_panels, audit: list | None) -> None:
    """Fill ``study.mutations`` and ``study.cna`` from the case lists and gene panels."""
    lists = {}
    for path in sorted((study.root / "case_lists").glob("*.txt")):
        sid, ids = read_case_list(path)
        lists[sid.rsplit("_", 1)[-1]] = (path, ids)
    genes = read_panel_genes([study.root] + ([gene_panels] if gene_panels else []))
    matrix = study.files.get("panel_matrix")
    for modality, prof, suffix, defaults in (("maf", study.mutations, "sequenced", ("mutations",)),
                                             ("cnv", study.cna, "cna", CNA_STABLE_IDS)):
        ids = (study.stable_ids.get(modality) or defaults[0],) + tuple(defaults)
        prof.panel_of = read_panel_matrix(matrix, ids) if matrix else panel_from_sample_table(study.files.get("samples"))
        prof.panel_genes = genes
        prof.source = matrix.name if matrix else "the sample table's GENE_PANEL column"
        if suffix in lists:
            path, samples = lists[suffix]
            prof.samples = set(samples)
            if audit is not None:
                audit.append((str(path), f"samples profiled for {'mutations' if modality == 'maf' else 'copy number'}"
                              " (case list)", len(samples), ""))
