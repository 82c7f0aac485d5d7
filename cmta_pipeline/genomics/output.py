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
    matrix = pd.read_csv(gdir / "matrix.tsv.gz", sep="\t", index_col="case_id")
    matrix.index = matrix.index.astype(str)
    surv = pd.read_csv(gdir / "patients.tsv", sep="\t", dtype={"case_id": str})
    check_ids(surv["case_id"], "case_id", str(gdir / "patients.tsv"))  # cmta_pipeline/ids.py
    surv = surv.set_index("case_id")
    dropped = pd.read_csv(gdir / "dropped.tsv", sep="\t", dtype=str)
    return families, matrix, surv, dropped
