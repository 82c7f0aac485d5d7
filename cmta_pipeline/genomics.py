"""Genomic profiles per patient, grouped into the six gene families of MCAT/CMTA.

Two kinds of input are read into one :class:`GenomicData` (a patient x feature matrix
whose columns are named ``GENE_<modality>``, plus survival per patient):

* the wide table that MCAT and CMTA published (:func:`load_wide_table`): one row per
  slide, ``case_id``, ``slide_id``, ``survival_months``, ``censorship`` (1 = censored) and
  gene columns suffixed ``_rnaseq``, ``_cnv`` or ``_mut``. Some of those tables (UCEC)
  carry gene columns without a suffix; the caller says what they are.
* per-modality files as cBioPortal and the GDC distribute them
  (:func:`load_per_modality`): gene x sample matrices for RNA-seq and gene-level CNV,
  a MAF for mutations and a clinical table for survival.

A family file (:func:`read_families`, the layout of MCAT's ``signatures.csv``: one
column per family, gene symbols in rows) is expanded against the matrix's columns
(:func:`expand_families`): each gene gives whichever of its ``_rnaseq``/``_cnv``/``_mut``
features exist, in sorted feature-name order as in the released code. No fitting
happens here; standardisation and imputation are per fold (``cohort.py``).
"""

from __future__ import annotations

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
DEFAULT_META_COLUMNS = (
    "", "Unnamed: 0", "case_id", "slide_id", "site", "is_female", "oncotree_code", "age",
    "survival_months", "censorship", "train",
)

#: MAF variant classes counted as a mutation by default: the protein-changing ones
#: (cBioPortal's "non-synonymous" set). Silent, intronic, UTR and flank variants are not.
DEFAULT_VARIANT_CLASSES = (
    "Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Frame_Shift_Ins",
    "In_Frame_Del", "In_Frame_Ins", "Splice_Site", "Nonstop_Mutation",
    "Translation_Start_Site",
)

DAYS_PER_MONTH = 365.25 / 12

_TCGA_SAMPLE = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})(?:-(\d{2}))?", re.IGNORECASE)


@dataclass
class GenomicData:
    """Genomic features and survival of the patients of one cohort.

    ``matrix``: index ``case_id``, one float column per feature ``GENE_<modality>``
    (NaN where a value is missing). ``survival``: index ``case_id``, columns
    ``survival_months`` (> 0) and ``censorship`` (1 = censored). ``dropped``: patients seen
    in some input but not kept, columns ``case_id``, ``reason``.
    """

    matrix: pd.DataFrame
    survival: pd.DataFrame
    dropped: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["case_id", "reason"])
    )


# --------------------------------------------------------------------------- families


def _read_table(path: Path, what: str, default_sep: str = "\t", **kw) -> pd.DataFrame:
    """A table with one-line errors: ``default_sep`` unless the name says .csv or .tsv/.txt."""
    if not path.is_file():
        raise CMTAError(f"{what} file not found: {path}")
    name = path.name.lower()
    sep = default_sep
    if name.endswith((".csv", ".csv.gz")):
        sep = ","
    elif name.endswith((".tsv", ".txt", ".tsv.gz", ".txt.gz")):
        sep = "\t"
    try:
        return pd.read_csv(path, sep=sep, low_memory=False, **kw)
    except Exception as exc:
        raise CMTAError(f"{path}: not a readable {what} table ({exc})") from exc


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
    surv: pd.DataFrame, source: str, row_label: str = "case_id", missing: str = "error"
) -> tuple[pd.DataFrame, list[str]]:
    """Validate ``survival_months`` and ``censorship``; return (kept rows, dropped ids).

    With ``missing="drop"`` rows without a survival time or censorship are returned as
    dropped (the cohort audit lists them as "no survival"); with ``missing="keep"`` they
    are kept with empty survival (new patients, for ``cmta predict``); otherwise they are
    an error.
    """
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
    dropped: list[str] = []
    if missing == "keep":
        known = surv[~missing_rows]
        checked, _ = check_survival(known, source, row_label) if len(known) else (known, [])
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
        dropped = [str(i) for i in surv.index[missing_rows]]
        surv = surv[~missing_rows]
    nonpos = surv["survival_months"] <= 0
    if nonpos.any():
        i = nonpos.idxmax()
        raise CMTAError(
            f"{source}: {where(i)}: survival_months is {float(surv.at[i, 'survival_months']):g} "
            "(must be > 0 months)"
        )
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
) -> GenomicData:
    """Read the MCAT/CMTA wide table (one row per slide) into one row per patient.

    ``unsuffixed`` says what gene columns without a ``_rnaseq``/``_cnv``/``_mut`` suffix
    are (``"mut"``, ``"cnv"``, ``"rnaseq"``) or ``"ignore"`` to leave them out; columns
    in ``meta_columns`` are never genes. Rows of one patient must agree on survival and
    on every gene value.
    """
    path = Path(path)
    df = _read_table(path, "genomic", default_sep=",")
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

    meta = set(meta_columns)
    suffixed, rename, unsuff = [], {}, []
    for col in df.columns:
        name = str(col)
        if name in meta:
            continue
        if name.endswith(tuple(f"_{m}" for m in MODALITIES)):
            suffixed.append(col)
        else:
            unsuff.append(col)
    if unsuff:
        if unsuffixed is None:
            raise CMTAError(
                f"{path}: {len(unsuff)} columns are neither known metadata nor suffixed "
                f"_rnaseq/_cnv/_mut ({', '.join(map(str, unsuff[:5]))}, ...); say what they "
                "are with --unsuffixed mut|cnv|rnaseq|ignore (genomics.unsuffixed in the config)"
            )
        if unsuffixed != "ignore":
            if unsuffixed not in MODALITIES:
                raise CMTAError(f"unsuffixed: {unsuffixed!r} is not one of {', '.join(MODALITIES)}, ignore")
            for col in unsuff:
                rename[col] = f"{col}_{unsuffixed}"
    genes = suffixed + [c for c in unsuff if c in rename]
    if not genes:
        raise CMTAError(f"{path}: no gene columns (names ending in _rnaseq, _cnv or _mut)")
    values = _numeric_block(df[genes], str(path), row_names).rename(columns=rename)
    dup_names = values.columns[values.columns.duplicated()].tolist()
    if dup_names:
        raise CMTAError(f"{path}: gene column {dup_names[0]!r} appears twice (after adding suffixes)")
    values.insert(0, "case_id", df["case_id"].to_numpy())

    surv_rows = df[["case_id", "survival_months", "censorship"]].copy()
    surv_rows.index = [r for r in row_names]
    surv_rows, dropped_rows = check_survival(surv_rows, str(path), "", missing_survival)

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
    dropped_cases = sorted({r.split("(")[-1].rstrip(")") for r in dropped_rows} - set(surv.index))
    matrix = matrix.loc[surv.index]
    log.info(
        "%s: %d patients, %d gene features (%s)", path, len(matrix), matrix.shape[1],
        ", ".join(f"{m} {sum(c.endswith('_' + m) for c in matrix.columns)}" for m in MODALITIES),
    )
    return GenomicData(
        matrix=matrix,
        survival=surv[["survival_months", "censorship"]],
        dropped=pd.DataFrame({"case_id": dropped_cases, "reason": "no survival"}),
    )


# --------------------------------------------------------------------------- per modality


def patient_of_sample(barcode: str) -> tuple[str, int]:
    """(patient id, sample-type code) of a sample barcode.

    TCGA barcodes give ``TCGA-XX-XXXX`` and the two-digit sample type (01 primary
    tumour ... 09; 10-19 normal; 20+ control); 1 is assumed when absent. Other ids are
    taken as patient ids (type 1).
    """
    m = _TCGA_SAMPLE.match(str(barcode).strip())
    if not m:
        return str(barcode).strip(), 1
    return m.group(1).upper(), int(m.group(2)) if m.group(2) else 1


def choose_samples(barcodes) -> tuple[dict[str, str], dict[str, str]]:
    """One sample per patient: (patient -> chosen barcode, patient -> drop reason).

    Tumour samples (type < 10) only; among several, the lowest sample type wins
    (01 primary tumour before 02 recurrent, 03 blood primary, 06 metastasis, ...), ties
    broken by barcode order (vial A before B, lower portion first).
    """
    best: dict[str, tuple[int, str]] = {}
    normal_only: set[str] = set()
    for bc in barcodes:
        patient, stype = patient_of_sample(bc)
        if stype >= 10:
            normal_only.add(patient)
            continue
        key = (stype, str(bc))
        if patient not in best or key < best[patient]:
            best[patient] = key
    chosen = {p: bc for p, (_, bc) in best.items()}
    reasons = {p: "no genomics (normal-tissue samples only)" for p in normal_only - set(chosen)}
    return chosen, reasons


_GENE_COLUMNS = ("Hugo_Symbol", "Gene Symbol", "gene_name", "Gene", "gene", "gene_symbol")
_ANNOTATION_COLUMNS = {
    "Entrez_Gene_Id", "Locus ID", "Cytoband", "gene_id", "gene_type", "Gene ID",
    "Entrez_Gene_ID", "Description",
}


def read_gene_matrix(path: str | os.PathLike, modality: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """A gene x sample matrix (cBioPortal ``data_mrna_*.txt``/``data_cna.txt``, GISTIC
    ``all_thresholded.by_genes.txt``) as patient x ``GENE_<modality>``.

    The gene column is the first of Hugo_Symbol, Gene Symbol, gene_name, Gene; annotation
    columns (Entrez_Gene_Id, Locus ID, Cytoband, ...) are skipped; every other column is a
    sample. Duplicate gene symbols are averaged. Returns (matrix, patient -> drop reason).
    """
    path = Path(path)
    df = _read_table(path, modality, comment="#")
    gene_col = next((c for c in _GENE_COLUMNS if c in df.columns), None)
    if gene_col is None:
        raise CMTAError(
            f"{path}: no gene symbol column (expected one of {', '.join(_GENE_COLUMNS)})"
        )
    samples = [c for c in df.columns if c != gene_col and c not in _ANNOTATION_COLUMNS]
    if not samples:
        raise CMTAError(f"{path}: no sample columns besides the gene column {gene_col!r}")
    df = df[df[gene_col].notna()]
    genes = df[gene_col].astype(str).str.strip()
    values = _numeric_block(
        df[samples], str(path), [f"gene {g}" for g in genes]
    )
    if modality == "cnv":
        bad = values.notna() & ~values.isin([-2, -1, 0, 1, 2])
        if bad.to_numpy().any():
            r, c = np.argwhere(bad.to_numpy())[0]
            raise CMTAError(
                f"{path}: gene {genes.iloc[r]}, sample {samples[c]}: CNV value "
                f"{values.iat[r, c]} is not a GISTIC level -2..2 (use the thresholded "
                "gene-level file, not log2 ratios)"
            )
    values.index = genes.to_numpy()
    values = values.groupby(level=0, sort=False).mean()
    chosen, reasons = choose_samples(samples)
    mat = values[list(chosen.values())].T
    mat.index = list(chosen.keys())
    mat.columns = [f"{g}_{modality}" for g in mat.columns]
    mat.index.name = "case_id"
    return mat, reasons


def read_maf(
    path: str | os.PathLike, variant_classes=DEFAULT_VARIANT_CLASSES
) -> tuple[pd.DataFrame, dict[str, str]]:
    """A MAF as a patient x ``GENE_mut`` 0/1 matrix.

    A gene is 1 for a patient when the chosen tumour sample has at least one variant
    of a counted class. Every patient with a sample in the MAF is taken as sequenced
    (0 for genes without a counted variant). Columns: genes with any counted variant.
    """
    path = Path(path)
    df = _read_table(path, "MAF", comment="#", dtype=str)
    need = ("Hugo_Symbol", "Variant_Classification", "Tumor_Sample_Barcode")
    miss = [c for c in need if c not in df.columns]
    if miss:
        raise CMTAError(f"{path}: missing MAF column(s) {', '.join(miss)}")
    chosen, reasons = choose_samples(df["Tumor_Sample_Barcode"].dropna().unique())
    keep = df["Tumor_Sample_Barcode"].isin(set(chosen.values()))
    counted = df[keep & df["Variant_Classification"].isin(set(variant_classes))]
    sample_to_patient = {bc: p for p, bc in chosen.items()}
    genes = sorted(counted["Hugo_Symbol"].dropna().astype(str).unique())
    mat = pd.DataFrame(0.0, index=sorted(chosen), columns=[f"{g}_mut" for g in genes])
    for bc, gene in zip(counted["Tumor_Sample_Barcode"], counted["Hugo_Symbol"]):
        if isinstance(gene, str):
            mat.at[sample_to_patient[bc], f"{gene}_mut"] = 1.0
    mat.index.name = "case_id"
    return mat, reasons


def read_clinical(path: str | os.PathLike, missing_survival: str = "error") -> tuple[pd.DataFrame, list[str]]:
    """Survival per patient from a cBioPortal or a GDC clinical table.

    cBioPortal (``data_clinical_patient.txt``): PATIENT_ID, OS_MONTHS, OS_STATUS
    (``1:DECEASED``/``0:LIVING`` or ``DECEASED``/``LIVING``). GDC (``clinical.tsv``):
    case_submitter_id (or submitter_id), vital_status (Dead/Alive), days_to_death,
    days_to_last_follow_up; months = days / 30.44. Returns (survival indexed by
    case_id, ids dropped for missing survival when ``missing_survival="drop"``).
    """
    path = Path(path)
    df = _read_table(path, "clinical", comment="#", dtype=str, na_values=["'--", "--", "[Not Available]", "[Not Applicable]", "[Unknown]", "NA"])
    if {"PATIENT_ID", "OS_MONTHS", "OS_STATUS"} <= set(df.columns):
        ids = df["PATIENT_ID"].astype(str).str.strip()
        status = df["OS_STATUS"].astype(str).str.upper()
        cens = pd.Series(np.nan, index=df.index, dtype=object)
        cens[status.str.contains("DECEASED") | status.str.startswith("1")] = 0
        cens[status.str.contains("LIVING") | status.str.startswith("0")] = 1
        unknown = df["OS_STATUS"].notna() & cens.isna()
        if unknown.any():
            i = unknown.idxmax()
            raise CMTAError(
                f"{path}: patient {ids[i]}: OS_STATUS {df.at[i, 'OS_STATUS']!r} is neither "
                "LIVING nor DECEASED"
            )
        surv = pd.DataFrame({"case_id": ids, "survival_months": df["OS_MONTHS"], "censorship": cens})
    else:
        id_col = next((c for c in ("case_submitter_id", "submitter_id") if c in df.columns), None)
        need = ["vital_status", "days_to_death", "days_to_last_follow_up"]
        miss = [c for c in need if c not in df.columns] + ([] if id_col else ["case_submitter_id"])
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
            raise CMTAError(f"{path}: case {ids[i]}: vital_status {df.at[i, 'vital_status']!r} is neither Dead nor Alive")
        d_death = pd.to_numeric(df["days_to_death"], errors="coerce")
        d_fu = pd.to_numeric(df["days_to_last_follow_up"], errors="coerce")
        for col, num in (("days_to_death", d_death), ("days_to_last_follow_up", d_fu)):
            badn = num.isna() & df[col].notna()
            if badn.any():
                i = badn.idxmax()
                raise CMTAError(f"{path}: case {ids[i]}: {col} {df.at[i, col]!r} is not a number")
        days = np.where(vital == "dead", d_death, d_fu)
        cens = np.where(vital == "dead", 0, np.where(vital == "alive", 1, np.nan))
        surv = pd.DataFrame({"case_id": ids, "survival_months": days / DAYS_PER_MONTH, "censorship": cens})
    surv = surv.drop_duplicates()
    dup = surv["case_id"].duplicated()
    if dup.any():
        raise CMTAError(
            f"{path}: patient {surv.loc[dup, 'case_id'].iloc[0]}: several rows with different "
            "survival; keep one survival record per patient"
        )
    surv = surv.set_index("case_id")
    return check_survival(surv, str(path), "patient", missing_survival)


def load_per_modality(
    rnaseq: str | os.PathLike | None = None,
    cnv: str | os.PathLike | None = None,
    maf: str | os.PathLike | None = None,
    clinical: str | os.PathLike | None = None,
    variant_classes=DEFAULT_VARIANT_CLASSES,
    missing_survival: str = "error",
) -> GenomicData:
    """Join per-modality files on patient id; patients need every modality given.

    Patients missing a modality or survival are returned in ``dropped`` with the reason.
    """
    if clinical is None and missing_survival != "keep":
        raise CMTAError("per-modality input needs a clinical table (--clinical) for survival")
    parts: list[tuple[str, pd.DataFrame]] = []
    reasons: dict[str, str] = {}
    if rnaseq:
        m, r = read_gene_matrix(rnaseq, "rnaseq")
        parts.append(("rnaseq", m)); reasons.update(r)
    if cnv:
        m, r = read_gene_matrix(cnv, "cnv")
        parts.append(("cnv", m)); reasons.update(r)
    if maf:
        m, r = read_maf(maf, variant_classes)
        parts.append(("mut", m)); reasons.update(r)
    if not parts:
        raise CMTAError("no genomic input: give a wide table or at least one of --rnaseq, --cnv, --maf")
    if clinical is None:  # new patients without follow-up (missing_survival="keep")
        surv = pd.DataFrame(columns=["survival_months", "censorship"], dtype=float)
        surv.index.name = "case_id"
        no_surv = []
    else:
        surv, no_surv = read_clinical(clinical, missing_survival)
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
        if lacking:
            reasons[p] = f"no genomics (no {'/'.join(lacking)} data)"
        else:
            reasons[p] = "no survival"
    matrix = pd.concat([m.loc[kept] for _, m in parts], axis=1)
    matrix.index.name = "case_id"
    dropped = pd.DataFrame(sorted(reasons.items()), columns=["case_id", "reason"])
    return GenomicData(matrix=matrix, survival=surv.loc[kept], dropped=dropped)


# --------------------------------------------------------------------------- outputs

GENOMICS_FILES = ("families.tsv", "features.tsv", "patients.tsv", "dropped.tsv", "matrix.tsv.gz")


def write_genomics(data: GenomicData, families: dict[str, list[str]], outdir: str | os.PathLike) -> dict[str, list[str]]:
    """Write the genomics stage's outputs; return family -> feature names.

    ``families.tsv`` (family, n_features; family-file order), ``features.tsv`` (family,
    feature, gene, modality), ``patients.tsv`` (case_id, survival_months, censorship),
    ``dropped.tsv`` (case_id, reason) and ``matrix.tsv.gz`` (case_id + the features used
    by any family, raw values, empty = missing). ``families.tsv`` is written last.
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
