"""The cohort stage: patients with genomics, survival and usable slides; survival labels,
cross-validation folds and each fold's preprocessing of the genomic inputs (``cmta
cohort``; rule file ``workflow/rules/cohort.smk``; docs/cohort.md).

Rooms: :mod:`.assemble` (who is in the cohort, and why the others are not), :mod:`.labels`
(survival bins), :mod:`.folds` (split files or stratified folds), :mod:`.preprocessing`
(fitted on a fold's train rows), :mod:`.files` (one fold's folder, :func:`load_fold`),
:mod:`.build` (the stage end to end, :func:`build_cohort`).

>>> from cmta_pipeline.cohort import load_fold
>>> fold = load_fold("results/cohort", 0)   # FoldData: patients, omics per family, labels
"""

from .assemble import assemble_cohort, read_slides
from .build import build_cohort
from .files import SPLITS, FoldData, load_fold, write_fold
from .folds import inner_split, read_split_files, stratified_folds
from .labels import EPS, assign_labels, fit_bin_edges
from .preprocessing import (
    apply_preprocessing,
    fit_transform_fold,
    impute_missing,
    log1p_rnaseq_columns,
    standardize_columns,
)

__all__ = [
    "assemble_cohort", "read_slides", "build_cohort", "SPLITS", "FoldData", "load_fold",
    "write_fold", "inner_split", "read_split_files", "stratified_folds", "EPS",
    "assign_labels", "fit_bin_edges", "apply_preprocessing", "fit_transform_fold",
    "impute_missing", "log1p_rnaseq_columns", "standardize_columns",
]
