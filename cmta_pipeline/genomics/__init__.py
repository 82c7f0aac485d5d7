"""The genomics stage: genomic profiles per patient, grouped into the six gene families of
MCAT/CMTA, with survival (``cmta genomics``; rule file ``workflow/rules/genomics.smk``;
docs/genomics.md).

Two kinds of input are read into one :class:`~.data.GenomicData` (a patient x feature
matrix whose columns are named ``GENE_<modality>``, plus survival per patient):

* the wide table that MCAT and CMTA published (:mod:`.mcat`, :func:`load_wide_table`);
* per-modality files as cBioPortal and the GDC distribute them, joined on patient
  (:mod:`.join`, :func:`load_per_modality`): gene x sample matrices or cBioPortal's
  discrete long CNA layout (:mod:`.cbioportal`), a cBioPortal study folder read through
  its meta files (:mod:`.cbioportal_study`) with its case lists and gene panels
  (:mod:`.panels`), GDC per-sample files through the sample sheet (:mod:`.gdc`,
  :mod:`.gdc_sheet`), MAFs (:mod:`.maf`) and clinical tables for survival
  (:mod:`.clinical`, the GDC's in :mod:`.gdc_clinical`, checked by :mod:`.survival`);
  samples become patients in :mod:`.samples`, gene names meet the family symbols through
  :mod:`.aliases`.

A family file (:mod:`.families`) is expanded against the matrix's columns; no fitting
happens here (standardisation and imputation are per fold, in the cohort stage). Every
reader adds rows to one audit (:mod:`.audit`). :mod:`.output` writes and reads the
stage's folder; :mod:`.tables` holds the table-reading helpers the readers share.
"""

from .aliases import apply_aliases, read_aliases
from .audit import dropped_audit, family_audit
from .cbioportal import read_gene_matrix, read_gene_table
from .cbioportal_study import Study, read_study
from .clinical import read_clinical
from .data import MODALITIES, GenomicData
from .families import expand_families, read_families
from .join import load_per_modality
from .maf import DEFAULT_VARIANT_CLASSES, maf_files, read_maf
from .mcat import DEFAULT_META_COLUMNS, load_wide_table
from .output import AUDIT_COLUMNS, AUDIT_FILE, GENOMICS_FILES, read_genomics_dir, write_genomics
from .samples import SampleMap, choose_samples, patient_of_sample, read_sample_table, samples_to_patients
from .survival import DAYS_PER_MONTH, MISSING_POLICIES, NONPOSITIVE_POLICIES, check_survival
from .tables import NA_VALUES, leading_comment_lines

__all__ = [
    "apply_aliases", "read_aliases", "dropped_audit", "family_audit", "read_gene_matrix",
    "read_gene_table", "Study", "read_study", "read_clinical", "MODALITIES", "GenomicData", "expand_families",
    "read_families", "load_per_modality", "DEFAULT_VARIANT_CLASSES", "maf_files", "read_maf",
    "DEFAULT_META_COLUMNS", "load_wide_table", "AUDIT_COLUMNS", "AUDIT_FILE", "GENOMICS_FILES",
    "read_genomics_dir", "write_genomics", "SampleMap", "choose_samples", "patient_of_sample",
    "read_sample_table", "samples_to_patients", "DAYS_PER_MONTH", "MISSING_POLICIES", "NONPOSITIVE_POLICIES",
    "check_survival", "NA_VALUES", "leading_comment_lines",
]
