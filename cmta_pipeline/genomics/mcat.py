"""The wide table that MCAT and CMTA published (:func:`load_wide_table`): one row per
slide, ``case_id``, ``slide_id``, ``survival_months``, ``censorship`` (1 = censored) and
gene columns suffixed ``_rnaseq``, ``_cnv`` or ``_mut``. Gene columns without a suffix
(UCEC's table) are left out by default, as the released dataset code never selects them;
the caller can say what they are instead."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CMTAError
from ..ids import check_ids
from .audit import dropped_audit
from .data import MODALITIES, GenomicData
from .survival import check_survival
from .tables import examples, numeric_block, read_table

log = logging.getLogger(__name__)


#: Non-gene columns of the published wide tables (any other unsuffixed column is a gene).
#: Pandas index artifacts (``Unnamed: 0``, ``Unnamed: 0.1``, ...) are recognised as well.
DEFAULT_META_COLUMNS = (
    "", "Unnamed: 0", "case_id", "slide_id", "site", "is_female", "oncotree_code", "age",
    "survival_months", "censorship", "train",
)


INDEX_ARTIFACT = re.compile(r"^Unnamed: \d+(\.\d+)?$")


def load_wide_table(
    path: str | os.PathLike,
    unsuffixed: str | None = None,
    meta_columns: tuple[str, ...] | list[str] = DEFAULT_META_COLUMNS,
    missing_survival: str = "drop",
    nonpositive_followup: str = "drop",
    drop_last_column: bool = False,
) -> GenomicData:
    """Read the MCAT/CMTA wide table (one row per slide) into one row per patient.

    ``unsuffixed`` says what gene columns without a ``_rnaseq``/``_cnv``/``_mut`` suffix
    are (``"mut"``, ``"cnv"``, ``"rnaseq"``); ``None`` or ``"ignore"`` leaves them out, as
    the released dataset code does (it selects family features by suffixed name), with
    a note in the audit. Columns in ``meta_columns`` and pandas index artifacts
    (``Unnamed: N``, ``Unnamed: N.M``) are never genes. Rows of one patient must agree on
    survival and on every gene value. ``missing_survival`` and ``nonpositive_followup``:
    see :func:`check_survival`. ``drop_last_column`` reproduces a quirk of the released
    dataset code: it moves the table's last column into its metadata, so that column
    (``ZXDC_rnaseq`` in BLCA and LUAD) is never used.
    """
    path = Path(path)
    df = read_wide_rows(path, missing_survival)
    row_names = [f"row {i + 2} ({c})" for i, c in enumerate(df["case_id"])]
    audit: list[tuple[str, str, int, str]] = [
        (str(path), "rows read (one per slide)", len(df), ""),
        (str(path), "patients found", int(df["case_id"].nunique()), ""),
    ]
    genes, rename = gene_columns(path, list(df.columns), unsuffixed, meta_columns, drop_last_column, audit)
    values = numeric_block(df[genes], str(path), row_names).rename(columns=rename)
    dup_names = values.columns[values.columns.duplicated()].tolist()
    if dup_names:
        raise CMTAError(f"{path}: gene column {dup_names[0]!r} appears twice (after adding suffixes)")
    values.insert(0, "case_id", df["case_id"].to_numpy())

    surv_rows = df[["case_id", "survival_months", "censorship"]].copy()
    surv_rows.index = list(row_names)
    surv_rows, dropped_rows = check_survival(surv_rows, str(path), "", missing_survival, nonpositive_followup)
    surv = one_survival_per_patient(path, surv_rows)
    matrix = one_profile_per_patient(path, values).loc[surv.index]
    case_of_row = dict(zip(row_names, df["case_id"]))
    dropped_cases: dict[str, str] = {}
    for row, reason in dropped_rows.items():
        case = case_of_row[row]
        if case not in surv.index:
            dropped_cases.setdefault(case, reason)
    log.info(
        "%s: %d patients, %d gene features (%s)", path, len(matrix), matrix.shape[1],
        ", ".join(f"{m} {sum(c.endswith('_' + m) for c in matrix.columns)}" for m in MODALITIES),
    )
    dropped = pd.DataFrame(sorted(dropped_cases.items()), columns=["case_id", "reason"])
    audit += dropped_audit(str(path), dropped)
    audit.append((str(path), "patients kept", len(matrix), ""))
    return GenomicData(
        matrix=matrix, survival=surv[["survival_months", "censorship"]], dropped=dropped, audit=audit,
    )


def read_wide_rows(path: Path, missing_survival: str) -> pd.DataFrame:
    """The table's rows, with case_id, survival_months and censorship checked present
    (the survival columns may be absent for new patients, ``missing_survival="keep"``)."""
    df = read_table(path, "genomic", default_sep=",", skip_comments=False)
    required = ("case_id", "survival_months", "censorship")
    if missing_survival == "keep":  # new patients: survival columns may be absent
        absent = [c for c in required[1:] if c not in df.columns]
        if absent:
            df = pd.concat([df, pd.DataFrame(np.nan, index=df.index, columns=absent)], axis=1)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CMTAError(
            f"{path}: missing required column(s) {', '.join(missing)} (the MCAT/CMTA "
            "layout has case_id, slide_id, survival_months, censorship and gene columns)"
        )
    if df["case_id"].isna().any():
        raise CMTAError(f"{path}: row {int(df['case_id'].isna().to_numpy().argmax()) + 2}: case_id is empty")
    df["case_id"] = df["case_id"].astype(str).str.strip()
    check_ids(df["case_id"], "case_id", str(path))  # the one identifier rule (cmta_pipeline/ids.py)
    return df


def gene_columns(
    path: Path, columns: list, unsuffixed: str | None, meta_columns, drop_last_column: bool,
    audit: list,
) -> tuple[list, dict]:
    """(gene columns to read, renames adding the suffix to unsuffixed ones), with what was
    left out in the audit."""
    meta = set(meta_columns)
    suffixed, rename, unsuff, index_cols = [], {}, [], []
    if drop_last_column and str(columns[-1]) not in meta:
        audit.append((
            str(path), "last column left out (as the released code)", 1,
            f"{columns[-1]}: the released MCAT/CMTA dataset code treats a table's last column as metadata",
        ))
        columns = columns[:-1]
    for col in columns:
        name = str(col)
        if INDEX_ARTIFACT.match(name):
            index_cols.append(name)
        elif name in meta:
            continue
        elif name.endswith(tuple(f"_{m}" for m in MODALITIES)):
            suffixed.append(col)
        else:
            unsuff.append(col)
    if index_cols:
        audit.append((str(path), "index columns left out", len(index_cols), examples(index_cols)))
    if unsuff:
        if unsuffixed in (None, "ignore"):
            audit.append((
                str(path), "unsuffixed columns left out", len(unsuff),
                f"{examples(unsuff, 5)}: neither metadata nor suffixed _rnaseq/_cnv/_mut; "
                "the released MCAT/CMTA dataset code never selects them for a family "
                "(--unsuffixed mut|cnv|rnaseq uses them)",
            ))
            log.info("%s: %d unsuffixed columns left out (%s)", path, len(unsuff), examples(unsuff, 3))
        else:
            if unsuffixed not in MODALITIES:
                raise CMTAError(f"unsuffixed: {unsuffixed!r} is not one of {', '.join(MODALITIES)}, ignore")
            for col in unsuff:
                rename[col] = f"{col}_{unsuffixed}"
            audit.append((str(path), f"unsuffixed columns read as _{unsuffixed}", len(unsuff), examples(unsuff, 5)))
    genes = suffixed + [c for c in unsuff if c in rename]
    if not genes:
        raise CMTAError(f"{path}: no gene columns (names ending in _rnaseq, _cnv or _mut)")
    return genes, rename


def one_survival_per_patient(path: Path, surv_rows: pd.DataFrame) -> pd.DataFrame:
    """Survival indexed by case_id: the rows of a patient (one per slide) must agree."""
    surv_rows = surv_rows.set_index("case_id")
    surv = surv_rows[~surv_rows.index.duplicated()]
    conflict = surv_rows.groupby(level=0).nunique().max(axis=1) > 1
    if conflict.any():
        case = conflict.index[conflict.to_numpy().argmax()]
        raise CMTAError(
            f"{path}: case_id {case}: its rows disagree on survival_months or censorship; "
            "keep one survival record per patient"
        )
    return surv


def one_profile_per_patient(path: Path, values: pd.DataFrame) -> pd.DataFrame:
    """Gene values indexed by case_id: the rows of a patient must agree on every gene."""
    uniq = values.drop_duplicates()
    if uniq["case_id"].duplicated().any():
        case = uniq.loc[uniq["case_id"].duplicated(), "case_id"].iloc[0]
        rows = uniq[uniq["case_id"] == case].drop(columns="case_id")
        diff = rows.columns[(rows.nunique(dropna=False) > 1).to_numpy()]
        raise CMTAError(
            f"{path}: case_id {case}: its rows (one per slide) disagree on gene column "
            f"{diff[0]!r} ({len(diff)} columns differ); each patient must have one genomic profile"
        )
    return uniq.set_index("case_id")
