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
from ..genomics.tables import MAX_SURVIVAL_MONTHS, bad_value_text, check_finite, first_bad_cell

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


def read_summary(cohort_dir: str | os.PathLike) -> dict:
    """``folds.json`` of a ``cmta cohort`` folder, checked: a mapping with ``n_folds`` (a
    positive whole number) and ``family_names`` (a list); else a one-line error."""
    marker = Path(cohort_dir) / "folds.json"
    if not marker.is_file():
        raise CMTAError(f"{marker}: missing; the cohort stage has not completed (run `cmta cohort`)")
    try:
        summary = json.loads(marker.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CMTAError(f"{marker}: not valid JSON ({exc}); run `cmta cohort` again") from None
    if not isinstance(summary, dict):
        raise CMTAError(f"{marker}: expected a mapping (n_folds, family_names, ...), got "
                        f"{type(summary).__name__} {str(summary)[:40]}; run `cmta cohort` again")
    n = summary.get("n_folds")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CMTAError(f"{marker}: key 'n_folds' is {n!r} (a positive whole number expected)")
    if not isinstance(summary.get("family_names"), list):
        raise CMTAError(f"{marker}: key 'family_names' is {summary.get('family_names')!r} (a list expected)")
    return summary


def load_fold(cohort_dir: str | os.PathLike, fold: int) -> FoldData:
    """Read fold ``fold`` of a ``cmta cohort`` output folder; a missing or damaged file
    (fold.json, patients.tsv, omics.h5 and its datasets) is a one-line error naming it."""
    cohort_dir = Path(cohort_dir)
    summary = read_summary(cohort_dir)
    if not 0 <= fold < summary["n_folds"]:
        raise CMTAError(f"{cohort_dir / 'folds.json'}: fold {fold} does not exist (n_folds = {summary['n_folds']})")
    fdir = cohort_dir / "folds" / f"fold_{fold}"
    info = read_fold_info(fdir / "fold.json")
    try:
        patients = pd.read_csv(fdir / "patients.tsv", sep="\t", dtype={"case_id": str, "slide_ids": str})
        patients["slide_ids"] = [s.split(";") if isinstance(s, str) and s else [] for s in patients["slide_ids"]]
        patients = patients.set_index("case_id")
    except (OSError, ValueError, KeyError) as exc:
        raise CMTAError(f"{fdir / 'patients.tsv'}: missing or not a fold's patient table ({exc})") from None
    check_finite(patients[["survival_months"]], str(fdir / "patients.tsv"),
                 [f"case_id {c}" for c in patients.index], MAX_SURVIVAL_MONTHS)
    names = summary["family_names"]
    case_ids, blocks = _read_omics(fdir / "omics.h5", len(names))
    omics = {c: [np.ascontiguousarray(b[r]) for b in blocks] for r, c in enumerate(case_ids)}
    return FoldData(
        fold=fold,
        family_names=list(names),
        omic_sizes=[int(b.shape[1]) for b in blocks],
        bin_edges=np.asarray(info["bin_edges"], dtype=float),
        patients=patients,
        omics=omics,
    )


def read_fold_info(path: Path) -> dict:
    """A fold's ``fold.json``: a mapping with finite ``bin_edges``."""
    try:
        info = json.loads(path.read_text())
    except OSError:
        raise CMTAError(f"{path}: missing; run `cmta cohort` again") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CMTAError(f"{path}: not valid JSON ({exc}); run `cmta cohort` again") from None
    edges = info.get("bin_edges") if isinstance(info, dict) else None
    try:
        ok = edges is not None and len(edges) >= 2 and np.isfinite(np.asarray(edges, dtype=float)[1:-1]).all()
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CMTAError(f"{path}: key 'bin_edges' is missing or not a list of numbers; run `cmta cohort` again")
    return info


def _read_omics(path: Path, n_families: int) -> tuple[list[str], list[np.ndarray]]:
    """(case ids, one block per family) of a fold's ``omics.h5``; a missing file or
    dataset, or a non-finite value, is a one-line error."""
    if not path.is_file():
        raise CMTAError(f"{path}: missing; run `cmta cohort` again")
    try:
        with h5py.File(path, "r") as h5:
            for key in ["case_id"] + [f"omic_{i}" for i in range(n_families)]:
                if key not in h5:
                    raise CMTAError(f"{path}: no {key!r} dataset; run `cmta cohort` again")
            case_ids = [c.decode() if isinstance(c, bytes) else str(c) for c in h5["case_id"][()]]
            blocks = [h5[f"omic_{i}"][()] for i in range(n_families)]
    except OSError as exc:
        raise CMTAError(f"{path}: not a readable HDF5 file ({exc})") from None
    for i, b in enumerate(blocks):
        if b.ndim != 2 or b.shape[0] != len(case_ids):
            raise CMTAError(f"{path}: 'omic_{i}' has shape {b.shape}, not ({len(case_ids)} patients, features)")
        at = first_bad_cell(b, allow_nan=False)
        if at is not None:
            raise CMTAError(f"{path}: 'omic_{i}', patient {case_ids[at[0]]}, feature {at[1]}: "
                            f"value {bad_value_text(float(b[at]), None)}")
    return case_ids, blocks


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
