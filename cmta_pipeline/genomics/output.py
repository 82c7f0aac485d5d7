"""The genomics stage's output folder: written by :func:`write_genomics`, read back by
:func:`read_genomics_dir` (``families.tsv`` last: its presence marks a finished folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import CMTAError
from ..fileio import atomic_output
from ..ids import check_ids
from .audit import family_audit
from .data import GenomicData
from .families import expand_families
from .survival import check_survival
from .tables import numeric_block

GENOMICS_FILES = ("families.tsv", "features.tsv", "patients.tsv", "dropped.tsv", "matrix.tsv.gz")


#: Written beside GENOMICS_FILES; not needed to read the folder back.
AUDIT_FILE = "audit.tsv"


#: Written last: its presence marks a finished folder.
MARKER = "families.tsv"


AUDIT_COLUMNS = ("source", "item", "count", "detail")


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
    matrix = _read_checked(gdir / "matrix.tsv.gz", "genomic matrix")
    matrix = numeric_block(matrix, str(gdir / "matrix.tsv.gz"), [f"case_id {c}" for c in matrix.index])
    surv = _read_checked(gdir / "patients.tsv", "survival")
    check_ids(surv.index, "case_id", str(gdir / "patients.tsv"))  # cmta_pipeline/ids.py
    missing = [c for c in ("survival_months", "censorship") if c not in surv.columns]
    if missing:
        raise CMTAError(f"{gdir / 'patients.tsv'}: missing column(s) {', '.join(missing)}")
    # a hand-edited or foreign folder: infinite or absurd follow-ups are refused here too
    # (missing ones are patients kept for prediction: --missing-survival keep)
    surv[["survival_months", "censorship"]] = check_survival(
        surv[["survival_months", "censorship"]], str(gdir / "patients.tsv"), "case_id", "keep", "keep")[0]
    dropped = pd.read_csv(gdir / "dropped.tsv", sep="\t", dtype=str)
    return families, matrix, surv, dropped


def _read_checked(path: Path, what: str) -> pd.DataFrame:
    """A table of a genomics folder indexed by case_id: a one-line error for an empty or
    unreadable file, a missing case_id column or a patient given twice."""
    try:
        df = pd.read_csv(path, sep="\t", dtype={"case_id": str})
    except Exception as exc:  # empty, binary, ragged
        raise CMTAError(f"{path}: not a readable {what} table ({exc})") from None
    if "case_id" not in df.columns:
        raise CMTAError(f"{path}: no case_id column")
    dup = df["case_id"].duplicated()
    if dup.any():
        raise CMTAError(
            f"{path}: row {int(dup.to_numpy().argmax()) + 2}: case_id {df['case_id'][dup].iloc[0]} "
            "appears twice (one row per patient)"
        )
    return df.set_index("case_id")
