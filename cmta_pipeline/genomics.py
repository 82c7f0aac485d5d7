"""Genomic profiles per patient, grouped into the six gene families of MCAT/CMTA.

Two kinds of input are read into one :class:`GenomicData` (a patient x feature matrix
whose columns are named ``GENE_<modality>``, plus survival per patient):

* the wide table that MCAT and CMTA published (:func:`load_wide_table`): one row per
  slide, ``case_id``, ``slide_id``, ``survival_months``, ``censorship`` (1 = censored) and
  gene columns suffixed ``_rnaseq``, ``_cnv`` or ``_mut``. Gene columns without a suffix
  (UCEC's table) are left out by default, as the released dataset code never selects
  them; the caller can say what they are instead.
* per-modality files as cBioPortal and the GDC distribute them
  (:func:`load_per_modality`): gene x sample matrices (wide) or cBioPortal's discrete
  long CNA layout, GDC per-sample files joined through the sample sheet (``gdc.py``),
  MAFs for mutations and a clinical table for survival.

A family file (:func:`read_families`, the layout of MCAT's ``signatures.csv``: one
column per family, gene symbols in rows) is expanded against the matrix's columns
(:func:`expand_families`): each gene gives whichever of its ``_rnaseq``/``_cnv``/``_mut``
features exist, in sorted feature-name order as in the released code. No fitting
happens here; standardisation and imputation are per fold (``cohort.py``).

Every reader adds rows to one audit (:class:`GenomicData` ``audit``; ``audit.tsv``):
what was read from which file, which patients and samples were found, matched or
dropped and why, and which family genes each modality has or lacks.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CMTAError
from .fileio import atomic_output

log = logging.getLogger(__name__)

MODALITIES = ("rnaseq", "cnv", "mut")

#: Non-gene columns of the published wide tables (any other unsuffixed column is a gene).
#: Pandas index artifacts (``Unnamed: 0``, ``Unnamed: 0.1``, ...) are recognised as well.
DEFAULT_META_COLUMNS = (
    "", "Unnamed: 0", "case_id", "slide_id", "site", "is_female", "oncotree_code", "age",
    "survival_months", "censorship", "train",
)
_INDEX_ARTIFACT = re.compile(r"^Unnamed: \d+(\.\d+)?$")

#: MAF variant classes counted as a mutation by default: the protein-changing ones
#: (cBioPortal's "non-synonymous" set). Silent, intronic, UTR and flank variants are not.
DEFAULT_VARIANT_CLASSES = (
    "Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Frame_Shift_Ins",
    "In_Frame_Del", "In_Frame_Ins", "Splice_Site", "Nonstop_Mutation",
    "Translation_Start_Site",
)

#: Days per month of the published tables: every survival_months of MCAT's BLCA, UCEC
#: and LUAD tables equals round(d / 30.44, 2) for a whole number of days d (cBioPortal's
#: OS_MONTHS convention); 365.25 / 12 fails for about a fifth of them.
DAYS_PER_MONTH = 30.44

#: Cells that mean "no value" in cBioPortal and GDC downloads.
NA_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "'--", "--", "[Not Available]",
             "[Not Applicable]", "[Unknown]", "[Not Evaluated]", "[Discrepancy]",
             "[Completed]", "[Not Reported]"]

#: What to do with a follow-up of zero months or below.
NONPOSITIVE_POLICIES = ("drop", "keep", "error")

_TCGA_SAMPLE = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})(?:-(\d{2}))?", re.IGNORECASE)


@dataclass
class GenomicData:
    """Genomic features and survival of the patients of one cohort.

    ``matrix``: index ``case_id``, one float column per feature ``GENE_<modality>``
    (NaN where a value is missing). ``survival``: index ``case_id``, columns
    ``survival_months`` (> 0, or >= 0 when zero follow-up is kept) and ``censorship``
    (1 = censored). ``dropped``: patients seen in some input but not kept, columns
    ``case_id``, ``reason``. ``audit``: rows (source, item, count, detail) saying what
    was read from which file (see :func:`write_genomics`).
    """

    matrix: pd.DataFrame
    survival: pd.DataFrame
    dropped: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["case_id", "reason"])
    )
    audit: list[tuple[str, str, int, str]] = field(default_factory=list)


def _examples(items, n: int = 8) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


# --------------------------------------------------------------------------- reading


def _open_text(path: Path):
    return gzip.open(path, "rt", errors="replace") if path.name.endswith(".gz") else open(path, errors="replace")


def leading_comment_lines(path: Path) -> int:
    """Number of leading lines starting with ``#`` (cBioPortal's attribute header rows,
    a MAF's ``#version``, a GDC file's ``# gene-model``). Only leading lines: a ``#``
    inside a data cell is data."""
    n = 0
    with _open_text(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            n += 1
    return n


def _read_table(path: Path, what: str, default_sep: str = "\t", **kw) -> pd.DataFrame:
    """A table with one-line errors: ``default_sep`` unless the name says .csv or
    .tsv/.txt/.maf; leading ``#`` lines are skipped unless ``skip_comments=False``."""
    path = Path(path)
    if not path.is_file():
        raise CMTAError(f"{what} file not found: {path}")
    name = path.name.lower().removesuffix(".gz")
    sep = default_sep
    if name.endswith(".csv"):
        sep = ","
    elif name.endswith((".tsv", ".txt", ".maf")):
        sep = "\t"
    if kw.pop("skip_comments", True):
        kw.setdefault("skiprows", leading_comment_lines(path))
    try:
        return pd.read_csv(path, sep=sep, low_memory=False, **kw)
    except Exception as exc:
        raise CMTAError(f"{path}: not a readable {what} table ({exc})") from exc


def _check_unique_header(path: Path, columns, what: str) -> None:
    """Pandas renames a repeated header to ``X.1``; a repeated sample is an error."""
    seen = set()
    for c in columns:
        if c in seen:
            raise CMTAError(f"{path}: column {c!r} appears twice in the header (duplicate {what})")
        seen.add(c)


def _header(path: Path, sep: str = "\t") -> list[str]:
    skip = leading_comment_lines(path)
    with _open_text(path) as fh:
        for i, line in enumerate(fh):
            if i == skip:
                return [c.strip().strip('"') for c in line.rstrip("\r\n").split(sep)]
    return []


# --------------------------------------------------------------------------- families


def read_families(path: str | os.PathLike) -> dict[str, list[str]]:
    """Family name -> gene symbols, in the file's column order.

    The file has one column per family and gene symbols in the rows (ragged: empty
    cells pad the shorter columns). Comma-separated unless it ends in .tsv/.txt.
    """
    path = Path(path)
    df = _read_table(path, "family", default_sep=",", dtype=str)
    if df.shape[1] == 0:
        raise CMTAError(f"{path}: no family columns (expected one column per gene family)")
    families: dict[str, list[str]] = {}
    for col in df.columns:
        if str(col).startswith("Unnamed:"):
            raise CMTAError(
                f"{path}: column {df.columns.get_loc(col) + 1} has no family name in the header"
            )
        genes = [g.strip() for g in df[col].dropna() if g.strip()]
        if not genes:
            raise CMTAError(f"{path}: family {col!r} lists no genes")
        families[str(col)] = list(dict.fromkeys(genes))  # unique, order kept
    return families


def expand_families(
    families: dict[str, list[str]], columns, source: str = "genomic data"
) -> dict[str, list[str]]:
    """Family name -> feature names (``GENE_<modality>``) present in ``columns``.

    Each gene expands to every modality found for it; features are sorted by name, as
    MCAT/CMTA do. A family with no feature in the data is an error: a zero-width
    family cannot feed a genomic network.
    """
    present = set(map(str, columns))
    out: dict[str, list[str]] = {}
    for name, genes in families.items():
        feats = sorted(
            f"{g}_{m}" for g in genes for m in MODALITIES if f"{g}_{m}" in present
        )
        if not feats:
            raise CMTAError(
                f"family {name!r}: none of its {len(genes)} genes ({', '.join(genes[:5])}, ...) "
                f"has a feature in {source}; check that gene symbols match the data's "
                "(HUGO symbols) and that gene columns carry a _rnaseq/_cnv/_mut suffix "
                "(or declare unsuffixed columns with --unsuffixed)"
            )
        out[name] = feats
    return out


# --------------------------------------------------------------------------- survival


def check_survival(
    surv: pd.DataFrame, source: str, row_label: str = "case_id", missing: str = "error",
    nonpositive: str = "drop",
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Validate ``survival_months`` and ``censorship``; return (kept rows, dropped).

    ``dropped`` maps each row left out to its reason. ``missing``: rows without a
    survival time or censorship are an error (``"error"``), dropped as "no survival"
    (``"drop"``) or kept with empty survival (``"keep"``: new patients, for ``cmta
    predict``). ``nonpositive``: a follow-up of 0 months or below is dropped (``"drop"``,
    the default: reason "follow-up <= 0"), kept when it is 0 (``"keep"``: an event or
    censoring at time 0 is valid for scikit-survival; below 0 stays an error) or an
    error (``"error"``). With ``missing="keep"`` a row that ``"drop"`` would leave out
    keeps its genomics with an empty survival instead (new patients are predicted).
    """
    if nonpositive not in NONPOSITIVE_POLICIES:
        raise CMTAError(f"nonpositive_followup: {nonpositive!r} is not one of {', '.join(NONPOSITIVE_POLICIES)}")
    surv = surv.copy()
    where = lambda i: f"{row_label} {i}".strip()  # noqa: E731
    for col in ("survival_months", "censorship"):
        raw = surv[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            i = bad.idxmax()
            raise CMTAError(f"{source}: {where(i)}: {col} {raw[i]!r} is not a number")
        surv[col] = num
    missing_rows = surv["survival_months"].isna() | surv["censorship"].isna()
    dropped: dict[str, str] = {}
    if missing == "keep":
        known = surv[~missing_rows]
        if len(known):
            checked, blanked = check_survival(known, source, row_label, "error", nonpositive)
            if blanked:  # new patients are kept for prediction; only their follow-up goes
                log.warning("%s: %d rows with a follow-up <= 0 kept with empty survival (%s)",
                            source, len(blanked), _examples(blanked, 3))
                missing_rows[list(blanked)] = True
            surv.loc[~missing_rows, "survival_months"] = checked["survival_months"]
        surv.loc[missing_rows, ["survival_months", "censorship"]] = np.nan
        if not missing_rows.any():
            surv["censorship"] = surv["censorship"].astype(int)
        return surv, dropped
    if missing_rows.any():
        if missing != "drop":
            i = missing_rows.idxmax()
            col = "survival_months" if pd.isna(surv.at[i, "survival_months"]) else "censorship"
            raise CMTAError(
                f"{source}: {where(i)}: {col} is missing ({int(missing_rows.sum())} "
                "rows in all); fix the input or set missing_survival: drop to leave such "
                "patients out (they are listed in the cohort audit)"
            )
        dropped.update({str(i): "no survival" for i in surv.index[missing_rows]})
        surv = surv[~missing_rows]
    times = surv["survival_months"]
    nonpos = (times < 0) | ((times == 0) & (nonpositive != "keep"))
    if nonpos.any():
        i = nonpos.idxmax()
        t = float(surv.at[i, "survival_months"])
        if nonpositive == "error" or t < 0 and nonpositive == "keep":
            hint = (
                "a negative follow-up cannot be kept" if nonpositive == "keep"
                else "set nonpositive_followup: drop (or keep, for zero) to go on"
            )
            raise CMTAError(
                f"{source}: {where(i)}: survival_months is {t:g} (must be > 0 months; {hint})"
            )
        for i in surv.index[nonpos]:
            dropped[str(i)] = f"follow-up <= 0 (survival_months {float(surv.at[i, 'survival_months']):g})"
        surv = surv[~nonpos]
    badc = ~surv["censorship"].isin([0, 1])
    if badc.any():
        i = badc.idxmax()
        raise CMTAError(
            f"{source}: {where(i)}: censorship is {float(surv.at[i, 'censorship']):g} "
            "(must be 0 = event or 1 = censored)"
        )
    surv["censorship"] = surv["censorship"].astype(int)
    surv["survival_months"] = surv["survival_months"].astype(float)
    return surv, dropped


def _numeric_block(df: pd.DataFrame, source: str, row_names) -> pd.DataFrame:
    """``df`` as float64; a non-numeric cell is an error naming its row and column."""
    out = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            out[col] = s.astype(float)
            continue
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna() & s.notna() & (s.astype(str).str.strip() != "")
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise CMTAError(
                f"{source}: {row_names[pos]}, column {col!r}: value {s.iloc[pos]!r} is not a number"
            )
        out[col] = num.astype(float)
    return pd.DataFrame(out, index=df.index)


# --------------------------------------------------------------------------- wide table


def load_wide_table(
    path: str | os.PathLike,
    unsuffixed: str | None = None,
    meta_columns: tuple[str, ...] | list[str] = DEFAULT_META_COLUMNS,
    missing_survival: str = "error",
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
    df = _read_table(path, "genomic", default_sep=",", skip_comments=False)
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
    row_names = [f"row {i + 2} ({c})" for i, c in enumerate(df["case_id"])]
    audit: list[tuple[str, str, int, str]] = [
        (str(path), "rows read (one per slide)", len(df), ""),
        (str(path), "patients found", int(df["case_id"].nunique()), ""),
    ]

    meta = set(meta_columns)
    suffixed, rename, unsuff, index_cols = [], {}, [], []
    columns = list(df.columns)
    if drop_last_column and str(columns[-1]) not in meta:
        audit.append((
            str(path), "last column left out (as the released code)", 1,
            f"{columns[-1]}: the released MCAT/CMTA dataset code treats a table's last column as metadata",
        ))
        columns = columns[:-1]
    for col in columns:
        name = str(col)
        if _INDEX_ARTIFACT.match(name):
            index_cols.append(name)
        elif name in meta:
            continue
        elif name.endswith(tuple(f"_{m}" for m in MODALITIES)):
            suffixed.append(col)
        else:
            unsuff.append(col)
    if index_cols:
        audit.append((str(path), "index columns left out", len(index_cols), _examples(index_cols)))
    if unsuff:
        if unsuffixed in (None, "ignore"):
            audit.append((
                str(path), "unsuffixed columns left out", len(unsuff),
                f"{_examples(unsuff, 5)}: neither metadata nor suffixed _rnaseq/_cnv/_mut; "
                "the released MCAT/CMTA dataset code never selects them for a family "
                "(--unsuffixed mut|cnv|rnaseq uses them)",
            ))
            log.info("%s: %d unsuffixed columns left out (%s)", path, len(unsuff), _examples(unsuff, 3))
        else:
            if unsuffixed not in MODALITIES:
                raise CMTAError(f"unsuffixed: {unsuffixed!r} is not one of {', '.join(MODALITIES)}, ignore")
            for col in unsuff:
                rename[col] = f"{col}_{unsuffixed}"
            audit.append((str(path), f"unsuffixed columns read as _{unsuffixed}", len(unsuff), _examples(unsuff, 5)))
    genes = suffixed + [c for c in unsuff if c in rename]
    if not genes:
        raise CMTAError(f"{path}: no gene columns (names ending in _rnaseq, _cnv or _mut)")
    values = _numeric_block(df[genes], str(path), row_names).rename(columns=rename)
    dup_names = values.columns[values.columns.duplicated()].tolist()
    if dup_names:
        raise CMTAError(f"{path}: gene column {dup_names[0]!r} appears twice (after adding suffixes)")
    values.insert(0, "case_id", df["case_id"].to_numpy())

    surv_rows = df[["case_id", "survival_months", "censorship"]].copy()
    surv_rows.index = list(row_names)
    surv_rows, dropped_rows = check_survival(surv_rows, str(path), "", missing_survival, nonpositive_followup)

    # One row per patient: the rows of a patient (one per slide) must agree.
    surv_rows = surv_rows.set_index("case_id")
    surv = surv_rows[~surv_rows.index.duplicated()]
    conflict = surv_rows.groupby(level=0).nunique().max(axis=1) > 1
    if conflict.any():
        case = conflict.index[conflict.to_numpy().argmax()]
        raise CMTAError(
            f"{path}: case_id {case}: its rows disagree on survival_months or censorship; "
            "keep one survival record per patient"
        )
    uniq = values.drop_duplicates()
    if uniq["case_id"].duplicated().any():
        case = uniq.loc[uniq["case_id"].duplicated(), "case_id"].iloc[0]
        rows = uniq[uniq["case_id"] == case].drop(columns="case_id")
        diff = rows.columns[(rows.nunique(dropna=False) > 1).to_numpy()]
        raise CMTAError(
            f"{path}: case_id {case}: its rows (one per slide) disagree on gene column "
            f"{diff[0]!r} ({len(diff)} columns differ); each patient must have one genomic profile"
        )
    matrix = uniq.set_index("case_id")
    case_of_row = dict(zip(row_names, df["case_id"]))
    dropped_cases: dict[str, str] = {}
    for row, reason in dropped_rows.items():
        case = case_of_row[row]
        if case not in surv.index:
            dropped_cases.setdefault(case, reason)
    matrix = matrix.loc[surv.index]
    log.info(
        "%s: %d patients, %d gene features (%s)", path, len(matrix), matrix.shape[1],
        ", ".join(f"{m} {sum(c.endswith('_' + m) for c in matrix.columns)}" for m in MODALITIES),
    )
    dropped = pd.DataFrame(sorted(dropped_cases.items()), columns=["case_id", "reason"])
    audit += _dropped_audit(str(path), dropped)
    audit.append((str(path), "patients kept", len(matrix), ""))
    return GenomicData(
        matrix=matrix, survival=surv[["survival_months", "censorship"]], dropped=dropped, audit=audit,
    )


def _dropped_audit(source: str, dropped: pd.DataFrame) -> list[tuple[str, str, int, str]]:
    """One audit row per drop reason (its patients as the detail)."""
    rows = []
    kind = dropped["reason"].astype(str).str.split(" (", n=1, regex=False).str[0]
    for reason, g in dropped.groupby(kind, sort=True):
        detail = _examples([f"{c} ({r})" if r != reason else c for c, r in zip(g["case_id"], g["reason"])])
        rows.append((source, f"patients dropped: {reason}", len(g), detail))
    return rows


# --------------------------------------------------------------------------- per modality


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
    m = _TCGA_SAMPLE.match(str(barcode).strip())
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
    df = _read_table(path, "sample", dtype=str, na_values=NA_VALUES, keep_default_na=False)
    miss = [c for c in ("PATIENT_ID", "SAMPLE_ID") if c not in df.columns]
    if miss:
        raise CMTAError(f"{path}: missing column(s) {', '.join(miss)} (a cBioPortal sample table)")
    out: SampleMap = {}
    for i, (patient, sample) in enumerate(zip(df["PATIENT_ID"], df["SAMPLE_ID"])):
        if pd.isna(patient) or pd.isna(sample):
            raise CMTAError(f"{path}: row {i + 1} after the header: PATIENT_ID or SAMPLE_ID is empty")
        patient, sample = patient.strip(), sample.strip()
        kind = str(df["SAMPLE_TYPE"].iloc[i]).lower() if "SAMPLE_TYPE" in df.columns else ""
        m = _TCGA_SAMPLE.match(sample)
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


def _sample_audit(
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
        rows.append((source, "samples not used: normal tissue", len(normal), _examples(normal)))
    if others:
        rows.append((
            source, "samples not used: another sample of the patient chosen", len(others),
            "rule: tumour samples only, lowest sample type first (01 primary), then barcode "
            "order; " + _examples(others, 20),
        ))
    return rows


_GENE_COLUMNS = ("Hugo_Symbol", "Gene Symbol", "gene_name", "Gene", "gene", "gene_symbol")
_ANNOTATION_COLUMNS = {
    "Entrez_Gene_Id", "Locus ID", "Cytoband", "gene_id", "gene_type", "Gene ID",
    "Entrez_Gene_ID", "Description",
}
_LONG_SAMPLE_COLUMNS = ("Sample_Id", "SAMPLE_ID", "Sample_ID", "sample_id")


def read_aliases(path: str | os.PathLike | None) -> dict[str, str]:
    """Gene-name aliases: a two-column table (``alias``, ``symbol``), tab- or comma-separated.

    The data's gene names are mapped to the family file's symbols with it (e.g. a
    GENCODE name renamed since MCAT's ``signatures.csv``)."""
    if path is None:
        return {}
    path = Path(path)
    df = _read_table(path, "gene alias", dtype=str)
    miss = [c for c in ("alias", "symbol") if c not in df.columns]
    if miss:
        raise CMTAError(f"{path}: missing column(s) {', '.join(miss)} (layout: alias, symbol)")
    df = df.dropna(subset=["alias", "symbol"])
    dup = df["alias"].duplicated(keep=False) & ~df.duplicated(["alias", "symbol"], keep=False)
    if dup.any():
        a = df.loc[dup, "alias"].iloc[0]
        targets = ", ".join(df.loc[df["alias"] == a, "symbol"])
        raise CMTAError(f"{path}: alias {a!r} maps to several symbols ({targets})")
    return dict(zip(df["alias"].str.strip(), df["symbol"].str.strip()))


def apply_aliases(
    genes: pd.Series, aliases: dict[str, str], source: str, audit: list | None = None
) -> pd.Series:
    """``genes`` with aliases replaced by their symbols. An alias whose symbol the file
    also carries is a gene-symbol collision: an error naming both."""
    if not aliases:
        return genes
    present = set(genes)
    hit = sorted(g for g in present if g in aliases and aliases[g] != g)
    for g in hit:
        if aliases[g] in present:
            raise CMTAError(
                f"{source}: gene {g!r} is an alias of {aliases[g]!r}, which the file also has "
                "(gene-symbol collision): remove the alias or one of the two rows"
            )
    targets = pd.Series([aliases[g] for g in hit])
    clash = targets[targets.duplicated()]
    if len(clash):
        names = [g for g in hit if aliases[g] == clash.iloc[0]]
        raise CMTAError(
            f"{source}: genes {', '.join(map(repr, names))} are all aliases of {clash.iloc[0]!r} "
            "(gene-symbol collision): keep one alias"
        )
    if hit and audit is not None:
        audit.append((source, "gene aliases applied", len(hit), _examples([f"{g}->{aliases[g]}" for g in hit], 20)))
    return genes.map(lambda g: aliases.get(g, g))


def _layout_error(path: Path, col: str, value) -> CMTAError:
    return CMTAError(
        f"{path}: layout not recognised: column {col!r} holds sample ids such as {value!r}, "
        "not values; a gene x sample matrix has one column per sample (header Hugo_Symbol, "
        "[Entrez_Gene_Id], sample ids), cBioPortal's discrete long CNA layout the columns "
        "Hugo_Symbol, Entrez_Gene_Id, Sample_Id, Value"
    )


def read_gene_table(
    path: str | os.PathLike, modality: str, aliases: dict[str, str] | None = None,
    audit: list | None = None,
) -> pd.DataFrame:
    """A gene x sample table as floats (index gene symbols, columns sample ids).

    Layout recognised from the header: a wide matrix (cBioPortal ``data_mrna_*.txt``,
    ``data_cna.txt``, GISTIC ``all_thresholded.by_genes.txt``: a gene column
    Hugo_Symbol/Gene Symbol/gene_name/Gene, optional annotation columns such as
    Entrez_Gene_Id/Locus ID/Cytoband, one column per sample) or cBioPortal's discrete
    long CNA layout (Hugo_Symbol, Entrez_Gene_Id, Sample_Id, Value, ...). ``#`` header
    rows are skipped, ``NA``/``[Not Available]`` are missing. Duplicate gene symbols
    are averaged.
    """
    path = Path(path)
    header = _header(path, "," if path.name.lower().removesuffix(".gz").endswith(".csv") else "\t")
    gene_col = next((c for c in _GENE_COLUMNS if c in header), None)
    if gene_col is None:
        raise CMTAError(
            f"{path}: layout not recognised: no gene symbol column (expected one of "
            f"{', '.join(_GENE_COLUMNS)}; header starts {', '.join(header[:4])})"
        )
    sample_col = next((c for c in _LONG_SAMPLE_COLUMNS if c in header), None)
    long_layout = sample_col is not None and "Value" in header
    if not long_layout:
        _check_unique_header(path, header, "sample")
    # only the id columns as text: the values parse as floats in the C reader (fast)
    text = {c: str for c in header if c in (gene_col, sample_col) or c in _ANNOTATION_COLUMNS}
    df = _read_table(path, modality, dtype=text, na_values=NA_VALUES, keep_default_na=False)
    df = df[df[gene_col].notna()]
    first_line = leading_comment_lines(path) + 2  # file line of the first data row
    if long_layout:
        if audit is not None:
            audit.append((str(path), "layout", len(df), f"long (rows: {gene_col}, {sample_col}, Value)"))
        df = df[df[sample_col].notna()]
        rows = [f"line {first_line + i}" for i in df.index]
        vals = _numeric_block(df[["Value"]], str(path), rows)["Value"]
        genes = df[gene_col].astype(str).str.strip()
        samples = df[sample_col].astype(str).str.strip()
        long = pd.DataFrame({"gene": genes.to_numpy(), "sample": samples.to_numpy(), "value": vals.to_numpy()})
        dup = long.duplicated(["gene", "sample"], keep=False)
        if dup.any():
            d = long[dup]
            g, s = d["gene"].iloc[0], d["sample"].iloc[0]
            same = dup & (long["gene"] == g) & (long["sample"] == s)
            lines = [rows[i] for i in np.flatnonzero(same.to_numpy())]
            raise CMTAError(f"{path}: gene {g}, sample {s}: given twice ({', '.join(lines)}): duplicate sample rows")
        long["gene"] = apply_aliases(long["gene"], aliases or {}, str(path), audit)
        values = long.pivot_table(
            index="gene", columns="sample", values="value", aggfunc="mean", sort=False, dropna=False
        )
        values.columns.name = None
        values.index.name = None
    else:
        samples = [c for c in df.columns if c != gene_col and c not in _ANNOTATION_COLUMNS]
        if not samples:
            raise CMTAError(f"{path}: no sample columns besides the gene column {gene_col!r}")
        if audit is not None:
            audit.append((str(path), "layout", len(df), f"gene x sample matrix ({len(samples)} sample columns)"))
        genes = df[gene_col].astype(str).str.strip()
        try:
            values = _numeric_block(df[samples], str(path), [f"gene {g}" for g in genes])
        except CMTAError:
            for col in samples:  # a long file without its Value column, or another mix-up
                s = df[col].dropna()
                if len(s) and pd.to_numeric(s, errors="coerce").isna().all() and s.str.match(_TCGA_SAMPLE).any():
                    raise _layout_error(path, col, s.iloc[0]) from None
            raise
        values.index = apply_aliases(genes, aliases or {}, str(path), audit).to_numpy()
        values = values.groupby(level=0, sort=False).mean()
    if modality == "cnv":
        bad = values.notna() & ~values.isin([-2, -1, 0, 1, 2])
        if bad.to_numpy().any():
            r, c = np.argwhere(bad.to_numpy())[0]
            raise CMTAError(
                f"{path}: gene {values.index[r]}, sample {values.columns[c]}: CNV value "
                f"{values.iat[r, c]:g} is not a GISTIC level -2..2 (use the thresholded "
                "gene-level file, not log2 ratios)"
            )
    return values


def samples_to_patients(
    values: pd.DataFrame, modality: str, source: str, audit: list | None = None,
    sample_map: SampleMap | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Gene x sample ``values`` as patient x ``GENE_<modality>``, one sample per patient
    (:func:`choose_samples`). Returns (matrix, patient -> drop reason)."""
    chosen, reasons = choose_samples(values.columns, sample_map)
    if audit is not None:
        audit.extend(_sample_audit(source, values.columns, chosen, sample_map))
    mat = values[list(chosen.values())].T
    mat.index = list(chosen.keys())
    mat.columns = [f"{g}_{modality}" for g in mat.columns]
    mat.index.name = "case_id"
    return mat, reasons


def read_gene_matrix(
    path: str | os.PathLike, modality: str, aliases: dict[str, str] | None = None,
    audit: list | None = None, sample_map: SampleMap | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """A gene x sample file (:func:`read_gene_table`) as patient x ``GENE_<modality>``.

    Returns (matrix, patient -> drop reason)."""
    values = read_gene_table(path, modality, aliases, audit)
    return samples_to_patients(values, modality, str(path), audit, sample_map)


def maf_files(path: str | os.PathLike) -> list[Path]:
    """A MAF, or every ``*.maf``/``*.maf.gz``/``*.txt`` MAF under a folder (the GDC's
    masked somatic MAFs, one per sample)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith((".maf", ".maf.gz")))
        if not files:
            raise CMTAError(f"{path}: no *.maf or *.maf.gz files in this folder")
        return files
    if not path.is_file():
        raise CMTAError(f"MAF file not found: {path}")
    return [path]


def read_maf(
    path: str | os.PathLike, variant_classes=DEFAULT_VARIANT_CLASSES,
    aliases: dict[str, str] | None = None, audit: list | None = None,
    sample_map: SampleMap | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """MAF(s) as a patient x ``GENE_mut`` 0/1 matrix.

    ``path``: a MAF (cBioPortal ``data_mutations*.txt``, a merged GDC MAF; ``.gz`` ok) or
    a folder of them (GDC masked somatic MAFs, one per sample). A gene is 1 for a
    patient when the chosen tumour sample has at least one variant of a counted class.
    Every patient with a sample in the MAF is taken as sequenced (0 for genes without a
    counted variant). Columns: genes with any counted variant.
    """
    need = ("Hugo_Symbol", "Variant_Classification", "Tumor_Sample_Barcode")
    parts = []
    for f in maf_files(path):
        header = _header(f)
        miss = [c for c in need if c not in header]
        if miss:
            raise CMTAError(f"{f}: missing MAF column(s) {', '.join(miss)}")
        # only the three columns: a merged GDC MAF has 140 columns and millions of rows
        parts.append(_read_table(f, "MAF", dtype=str, usecols=list(need), na_values=NA_VALUES, keep_default_na=False))
    df = pd.concat(parts, ignore_index=True)
    source = str(path)
    df["Hugo_Symbol"] = apply_aliases(df["Hugo_Symbol"].fillna(""), aliases or {}, source, audit)
    barcodes = df["Tumor_Sample_Barcode"].dropna().astype(str).str.strip().unique()
    chosen, reasons = choose_samples(barcodes, sample_map)
    if audit is not None:
        audit.append((source, "MAF files read", len(parts), ""))
        audit.append((source, "variants read", len(df), ""))
        audit.extend(_sample_audit(source, barcodes, chosen, sample_map))
    keep = df["Tumor_Sample_Barcode"].isin(set(chosen.values()))
    counted = df[keep & df["Variant_Classification"].isin(set(variant_classes)) & (df["Hugo_Symbol"] != "")]
    sample_to_patient = {bc: p for p, bc in chosen.items()}
    genes = sorted(counted["Hugo_Symbol"].astype(str).unique())
    mat = pd.DataFrame(0.0, index=sorted(chosen), columns=[f"{g}_mut" for g in genes])
    for bc, gene in zip(counted["Tumor_Sample_Barcode"], counted["Hugo_Symbol"]):
        mat.at[sample_to_patient[bc], f"{gene}_mut"] = 1.0
    mat.index.name = "case_id"
    return mat, reasons


_GDC_PREFIXES = ("cases.", "demographic.", "diagnoses.", "follow_ups.", "exposures.", "treatments.")


def read_clinical(
    path: str | os.PathLike, missing_survival: str = "error", nonpositive_followup: str = "drop",
    audit: list | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Survival per patient from a cBioPortal or a GDC clinical table.

    cBioPortal (``data_clinical_patient.txt``): PATIENT_ID, OS_MONTHS, OS_STATUS
    (``1:DECEASED``/``0:LIVING`` or ``DECEASED``/``LIVING``); ``#`` header rows skipped.
    GDC (``clinical.tsv``, with or without the ``cases.``/``demographic.``/``diagnoses.``
    column prefixes of today's download): case_submitter_id, vital_status (Dead/Alive),
    days_to_death, days_to_last_follow_up and/or days_to_follow_up (the follow_ups node,
    where the GDC moved TCGA's follow-up in 2025); one row per case x diagnosis x
    follow-up x treatment, so per case the largest days_to_death and follow-up are used; months =
    days / 30.44, rounded to 2 decimals as in the published tables. Returns (survival
    indexed by case_id, patient -> reason for those left out).
    """
    path = Path(path)
    df = _read_table(path, "clinical", dtype=str, na_values=NA_VALUES, keep_default_na=False)
    df.columns = [next((c[len(p):] for p in _GDC_PREFIXES if c.startswith(p)), c) for c in map(str, df.columns)]
    if {"PATIENT_ID", "OS_MONTHS", "OS_STATUS"} <= set(df.columns):
        kind = "cBioPortal patient table"
        ids = df["PATIENT_ID"].astype(str).str.strip()
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
        surv = pd.DataFrame({"case_id": ids, "survival_months": df["OS_MONTHS"], "censorship": cens})
        surv = surv.drop_duplicates()
    else:
        kind = "GDC clinical table"
        id_col = next((c for c in ("case_submitter_id", "submitter_id") if c in df.columns), None)
        fu_cols = [c for c in ("days_to_last_follow_up", "days_to_follow_up") if c in df.columns]
        need = ["vital_status", "days_to_death"]
        miss = [c for c in need if c not in df.columns] + ([] if id_col else ["case_submitter_id"])
        miss += [] if fu_cols else ["days_to_last_follow_up (or follow_ups.days_to_follow_up)"]
        if miss:
            raise CMTAError(
                f"{path}: not a cBioPortal patient table (PATIENT_ID, OS_MONTHS, OS_STATUS) "
                f"nor a GDC clinical table: missing column(s) {', '.join(miss)}"
            )
        ids = df[id_col].astype(str).str.strip()
        vital = df["vital_status"].astype(str).str.strip().str.lower()
        bad = df["vital_status"].notna() & ~vital.isin(["dead", "alive"])
        if bad.any():
            i = bad.idxmax()
            raise CMTAError(
                f"{path}: line {i + 2}, case {ids[i]}: vital_status {df.at[i, 'vital_status']!r} "
                "is neither Dead nor Alive"
            )
        cols = {}
        for col in ["days_to_death"] + fu_cols:
            num = pd.to_numeric(df[col], errors="coerce")
            badn = num.isna() & df[col].notna()
            if badn.any():
                i = badn.idxmax()
                raise CMTAError(f"{path}: line {i + 2}, case {ids[i]}: {col} {df.at[i, col]!r} is not a number")
            cols[col] = num
        follow_up = pd.concat([cols.pop(c) for c in fu_cols], axis=1).max(axis=1)
        per_row = pd.DataFrame({
            "case_id": ids, "vital": vital.where(df["vital_status"].notna()),
            "days_to_death": cols["days_to_death"], "days_to_last_follow_up": follow_up,
        })
        per_case = []
        for case, g in per_row.groupby("case_id", sort=False):
            v = set(g["vital"].dropna())
            if len(v) > 1:
                raise CMTAError(f"{path}: case {case}: its rows disagree on vital_status ({', '.join(sorted(v))})")
            v = v.pop() if v else None
            days = g["days_to_death"].max() if v == "dead" else g["days_to_last_follow_up"].max()
            cens = 0 if v == "dead" else 1 if v == "alive" else np.nan
            months = np.round(days / DAYS_PER_MONTH, 2) if pd.notna(days) else np.nan
            per_case.append((case, months, cens))
        surv = pd.DataFrame(per_case, columns=["case_id", "survival_months", "censorship"])
    dup = surv["case_id"].duplicated()
    if dup.any():
        raise CMTAError(
            f"{path}: patient {surv.loc[dup, 'case_id'].iloc[0]}: several rows with different "
            "survival; keep one survival record per patient"
        )
    surv = surv.set_index("case_id")
    surv, dropped = check_survival(surv, str(path), "patient", missing_survival, nonpositive_followup)
    if audit is not None:
        audit.append((str(path), f"patients found ({kind})", len(surv) + len(dropped), ""))
    return surv, dropped


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
    from . import gdc

    if clinical is None and missing_survival != "keep":
        raise CMTAError("per-modality input needs a clinical table (--clinical) for survival")
    aliases = read_aliases(gene_aliases)
    audit: list[tuple[str, str, int, str]] = []
    sample_map = read_sample_table(sample_table, audit)
    parts: list[tuple[str, pd.DataFrame]] = []
    reasons: dict[str, str] = {}
    for modality, path in (("rnaseq", rnaseq), ("cnv", cnv)):
        if not path:
            continue
        if Path(path).is_dir():
            wanted = {g for genes in (families or {}).values() for g in genes}
            values = gdc.read_gdc_folder(path, modality, sample_sheet, rnaseq_unit, aliases, audit, wanted)
        else:
            values = read_gene_table(path, modality, aliases, audit)
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
    audit += _dropped_audit("all inputs", dropped)
    audit.append(("all inputs", "patients kept (every modality and survival)", len(kept), ""))
    return GenomicData(matrix=matrix, survival=surv.loc[kept], dropped=dropped, audit=audit)


# --------------------------------------------------------------------------- outputs

GENOMICS_FILES = ("families.tsv", "features.tsv", "patients.tsv", "dropped.tsv", "matrix.tsv.gz")
#: Written beside GENOMICS_FILES; not needed to read the folder back.
AUDIT_FILE = "audit.tsv"
AUDIT_COLUMNS = ("source", "item", "count", "detail")


def family_audit(families: dict[str, list[str]], columns) -> list[tuple[str, str, int, str]]:
    """Audit rows per family: genes found per modality, and genes in no modality of
    the data (with their names)."""
    present = set(map(str, columns))
    mods = [m for m in MODALITIES if any(c.endswith("_" + m) for c in present)]
    rows = []
    for name, genes in families.items():
        src = f"family {name} ({len(genes)} genes)"
        for m in mods:
            rows.append((src, f"genes with {m}", sum(f"{g}_{m}" in present for g in genes), ""))
        absent = [g for g in genes if not any(f"{g}_{m}" in present for m in MODALITIES)]
        rows.append((src, "genes missing from the data", len(absent), _examples(absent, 30)))
    return rows


def write_genomics(data: GenomicData, families: dict[str, list[str]], outdir: str | os.PathLike) -> dict[str, list[str]]:
    """Write the genomics stage's outputs; return family -> feature names.

    ``families.tsv`` (family, n_features; family-file order), ``features.tsv`` (family,
    feature, gene, modality), ``patients.tsv`` (case_id, survival_months, censorship),
    ``dropped.tsv`` (case_id, reason), ``matrix.tsv.gz`` (case_id + the features used
    by any family, raw values, empty = missing) and ``audit.tsv`` (source, item, count,
    detail: what was read from which file, patients and samples found, matched and
    dropped, genes per family found per modality and missing). ``families.tsv`` is
    written last.
    """
    outdir = Path(outdir)
    expanded = expand_families(families, data.matrix.columns)
    used = sorted({f for feats in expanded.values() for f in feats})
    rows = [
        (fam, f, f.rsplit("_", 1)[0], f.rsplit("_", 1)[1])
        for fam, feats in expanded.items() for f in feats
    ]
    with atomic_output(outdir / "features.tsv") as tmp:
        pd.DataFrame(rows, columns=["family", "feature", "gene", "modality"]).to_csv(tmp, sep="\t", index=False)
    with atomic_output(outdir / "matrix.tsv.gz") as tmp:
        data.matrix[used].to_csv(tmp, sep="\t", index_label="case_id", float_format="%.6g", compression="gzip")
    with atomic_output(outdir / "patients.tsv") as tmp:
        data.survival.to_csv(tmp, sep="\t", index_label="case_id")
    with atomic_output(outdir / "dropped.tsv") as tmp:
        data.dropped.to_csv(tmp, sep="\t", index=False)
    audit = pd.DataFrame(data.audit + family_audit(families, data.matrix.columns), columns=list(AUDIT_COLUMNS))
    with atomic_output(outdir / AUDIT_FILE) as tmp:
        audit.to_csv(tmp, sep="\t", index=False)
    with atomic_output(outdir / "families.tsv") as tmp:
        pd.DataFrame(
            {"family": list(expanded), "n_features": [len(v) for v in expanded.values()]}
        ).to_csv(tmp, sep="\t", index=False)
    return expanded


def read_genomics_dir(gdir: str | os.PathLike):
    """Read a ``cmta genomics`` output folder.

    Returns (family -> feature names, matrix indexed by case_id, survival indexed by
    case_id, dropped table).
    """
    gdir = Path(gdir)
    for name in GENOMICS_FILES:
        if not (gdir / name).is_file():
            raise CMTAError(f"{gdir / name}: missing; run `cmta genomics ... -o {gdir}` first")
    feats = pd.read_csv(gdir / "features.tsv", sep="\t", dtype=str)
    order = pd.read_csv(gdir / "families.tsv", sep="\t", dtype={"family": str})["family"].tolist()
    families = {fam: feats.loc[feats["family"] == fam, "feature"].tolist() for fam in order}
    matrix = pd.read_csv(gdir / "matrix.tsv.gz", sep="\t", index_col="case_id")
    matrix.index = matrix.index.astype(str)
    surv = pd.read_csv(gdir / "patients.tsv", sep="\t", dtype={"case_id": str}).set_index("case_id")
    dropped = pd.read_csv(gdir / "dropped.tsv", sep="\t", dtype=str)
    return families, matrix, surv, dropped
