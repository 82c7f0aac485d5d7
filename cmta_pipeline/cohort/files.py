"""One fold of a ``cmta cohort`` folder: written by :func:`write_fold`, read back by
:func:`load_fold` as :class:`FoldData`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..errors import CMTAError
from ..fileio import atomic_output, write_text_atomic

SPLITS = ("train", "inner_val", "heldout")


@dataclass
class FoldData:
    """One cross-validation fold, ready for training.

    ``patients``: index case_id; columns split ("train" | "inner_val" | "heldout"),
    survival_months, censorship, event, label (bin 0..n_bins-1), slide_ids (list[str]).
    ``omics``: case_id -> one float32 1-D array per family (length ``omic_sizes[i]``),
    preprocessed with statistics of this fold's train rows.
    """

    fold: int
    family_names: list[str]
    omic_sizes: list[int]
    bin_edges: np.ndarray
    patients: pd.DataFrame
    omics: dict[str, list[np.ndarray]]


def load_fold(cohort_dir: str | os.PathLike, fold: int) -> FoldData:
    """Read fold ``fold`` of a ``cmta cohort`` output folder."""
    cohort_dir = Path(cohort_dir)
    marker = cohort_dir / "folds.json"
    if not marker.is_file():
        raise CMTAError(f"{marker}: missing; the cohort stage has not completed (run `cmta cohort`)")
    summary = json.loads(marker.read_text())
    if not 0 <= fold < summary["n_folds"]:
        raise CMTAError(f"{marker}: fold {fold} does not exist (n_folds = {summary['n_folds']})")
    fdir = cohort_dir / "folds" / f"fold_{fold}"
    info = json.loads((fdir / "fold.json").read_text())
    patients = pd.read_csv(fdir / "patients.tsv", sep="\t", dtype={"case_id": str, "slide_ids": str})
    patients["slide_ids"] = [s.split(";") if isinstance(s, str) and s else [] for s in patients["slide_ids"]]
    patients = patients.set_index("case_id")
    names = summary["family_names"]
    with h5py.File(fdir / "omics.h5", "r") as h5:
        case_ids = [c.decode() if isinstance(c, bytes) else str(c) for c in h5["case_id"][()]]
        blocks = [h5[f"omic_{i}"][()] for i in range(len(names))]
    omics = {c: [np.ascontiguousarray(b[r]) for b in blocks] for r, c in enumerate(case_ids)}
    return FoldData(
        fold=fold,
        family_names=list(names),
        omic_sizes=[int(b.shape[1]) for b in blocks],
        bin_edges=np.asarray(info["bin_edges"], dtype=float),
        patients=patients,
        omics=omics,
    )


def write_fold(
    fdir: Path, patients: pd.DataFrame, stats: pd.DataFrame, Xk: np.ndarray, case_ids: np.ndarray,
    family_names: list[str], fam_cols: list[list[int]], feature_names: list[str], info: dict,
) -> None:
    """Write one fold's folder: ``patients.tsv``, ``preprocessing.tsv`` (full precision:
    ``cmta predict`` re-applies it), ``omics.h5`` (one float32 block per family, with the
    feature names) and ``fold.json`` (``info``)."""
    with atomic_output(fdir / "patients.tsv") as tmp:
        patients.to_csv(tmp, sep="\t", index=False)
    with atomic_output(fdir / "preprocessing.tsv") as tmp:
        # full precision (shortest round-trip repr): `cmta predict` re-applies these
        stats.to_csv(tmp, sep="\t", index=False)
    with atomic_output(fdir / "omics.h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("case_id", data=np.array(case_ids, dtype=object), dtype=h5py.string_dtype())
            for i, (name, cols) in enumerate(zip(family_names, fam_cols)):
                ds = h5.create_dataset(f"omic_{i}", data=Xk[:, cols].astype(np.float32))
                ds.attrs["family"] = name
                h5.create_dataset(
                    f"omic_{i}_features", data=np.array([feature_names[c] for c in cols], dtype=object),
                    dtype=h5py.string_dtype(),
                )
    write_text_atomic(fdir / "fold.json", json.dumps(info, indent=1) + "\n")
