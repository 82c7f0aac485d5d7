"""Risk for new patients: the fold models of a trained run applied to patients outside it.

Inputs: a run folder of ``cmta train`` (``<run>/fold_<k>/model.pt`` and
``predictions.tsv``), the ``cmta cohort`` folder it was trained on (each fold's stored
preprocessing: ``folds/fold_<k>/preprocessing.tsv`` and the kept features per family in
``omics.h5``), the new patients' genomics (a ``cmta genomics`` folder, written with
``--missing-survival keep`` when they have no follow-up) and, for models that read slides,
their slide sheet and patch features.

For each fold model k, the new patients' raw genomic values are transformed with fold k's
statistics by :func:`cmta_pipeline.cohort.apply_preprocessing` (the cohort stage's own
code), the model is run in eval mode, and its risk is placed among the out-of-fold risks
that the same model gave the cohort's held-out patients (``fold_<k>/predictions.tsv``).

Output of :func:`predict_run` (one row per patient): ``case_id``, ``risk`` (mean over the
fold models), ``risk_percentile`` (mean over folds of the patient's mid-rank percentile
among fold k's out-of-fold risks, 0-100), ``risk_group`` (``high`` when risk_percentile
> 50, i.e. above the cohort's median risk on average, else ``low``), ``survival_1..T``
(mean over folds), ``n_folds``, then ``risk_fold_<k>`` and ``risk_percentile_fold_<k>``
per fold, and ``genes_imputed`` (models that read genomics: how many of the features the
models read were missing for the patient, filled with each fold's training median).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from ..cohort.assemble import read_slides
from ..cohort.files import read_fold_info, read_summary
from ..cohort.preprocessing import apply_preprocessing
from ..errors import CMTAError
from ..fileio import atomic_output
from ..genomics.output import read_genomics_dir
from ..models import modalities

log = logging.getLogger(__name__)


@dataclass
class FoldModel:
    """One fold's trained model with what is needed to prepare its inputs."""

    fold: int
    model: torch.nn.Module
    checkpoint: dict
    features: list[list[str]]  # kept feature names per family, in the model's order
    stats: pd.DataFrame  # preprocessing.tsv indexed by feature
    reference_risk: np.ndarray  # out-of-fold risks of the cohort's held-out patients
    training_cases: set[str]


def fold_dirs(run_dir: str | os.PathLike) -> dict[int, Path]:
    """Fold number -> ``run_dir/fold_<k>`` for every fold with a ``model.pt``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CMTAError(f"run folder not found: {run_dir}")
    found = {}
    for d in run_dir.glob("fold_*"):
        m = re.fullmatch(r"fold_(\d+)", d.name)
        if m and (d / "model.pt").is_file():
            found[int(m.group(1))] = d
    if not found:
        raise CMTAError(f"{run_dir}: no fold_<k>/model.pt (train the run first with `cmta train`)")
    return dict(sorted(found.items()))


def percentile_of(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mid-rank percentile (0-100) of each value among ``reference``: the share of
    reference values below it, ties counted half."""
    ref = np.sort(np.asarray(reference, dtype=float))
    v = np.asarray(values, dtype=float)
    below = np.searchsorted(ref, v, side="left")
    at_or_below = np.searchsorted(ref, v, side="right")
    return 100.0 * (below + 0.5 * (at_or_below - below)) / len(ref)


def load_fold_model(run_dir: Path, fold: int, fdir: Path, cohort_dir: Path, summary: dict,
                    device: torch.device) -> FoldModel:
    """Fold ``fold``'s model, its cohort statistics and its out-of-fold risks; checks that
    the checkpoint and the cohort agree (families and feature counts)."""
    from ..training.fold import load_checkpoint

    model, ckpt = load_checkpoint(fdir / "model.pt")
    if int(ckpt.get("fold", fold)) != fold:
        raise CMTAError(f"{fdir / 'model.pt'}: checkpoint of fold {ckpt['fold']} in folder fold_{fold}")
    if fold >= summary["n_folds"]:
        raise CMTAError(
            f"{run_dir}: fold {fold} has a model but {cohort_dir} has {summary['n_folds']} folds; "
            "give the cohort folder the run was trained on"
        )
    cdir = cohort_dir / "folds" / f"fold_{fold}"
    names = list(summary["family_names"])
    if ckpt.get("family_names") and list(ckpt["family_names"]) != names:
        raise CMTAError(
            f"fold {fold}: the checkpoint's families {ckpt['family_names']} are not the cohort's {names}"
        )
    features: list[list[str]] = []
    if "omics" in modalities(ckpt["model"]["name"]):
        try:
            with h5py.File(cdir / "omics.h5", "r") as h5:
                for i in range(len(names)):
                    raw = h5[f"omic_{i}_features"][()]
                    features.append([f.decode() if isinstance(f, bytes) else str(f) for f in raw])
        except (OSError, KeyError) as exc:
            raise CMTAError(f"{cdir / 'omics.h5'}: missing, unreadable or without its feature names ({exc})") from None
        sizes = ckpt["model"]["omic_sizes"]
        for i, name in enumerate(names):
            if sizes[i] != len(features[i]):
                raise CMTAError(
                    f"fold {fold}, family {name!r}: the model expects {sizes[i]} features but "
                    f"{cdir} keeps {len(features[i])}; give the cohort folder this run was trained on"
                )
    stats = _read_tsv(cdir / "preprocessing.tsv", "preprocessing", "feature").set_index("feature")
    ref = _reference_risks(fdir / "predictions.tsv")
    info = read_fold_info(cdir / "fold.json")
    if ckpt.get("bin_edges") and not np.allclose(ckpt["bin_edges"], info["bin_edges"]):
        log.warning("fold %d: the checkpoint's survival bins differ from %s", fold, cdir / "fold.json")
    if ckpt.get("optimistic"):
        log.warning("fold %d: OPTIMISTIC run (epoch chosen on the held-out fold)", fold)
    patients = pd.read_csv(cdir / "patients.tsv", sep="\t", dtype={"case_id": str})
    train_cases = set(patients.loc[patients["split"] != "heldout", "case_id"])
    return FoldModel(fold, model.to(device), ckpt, features, stats, ref, train_cases)


def _read_tsv(path: Path, what: str, column: str) -> pd.DataFrame:
    """A TSV of a run or cohort folder; one-line errors for a missing, empty or unreadable
    file and a missing ``column``."""
    if not path.is_file():
        raise CMTAError(f"{path}: missing (the {what} file of a finished run or cohort)")
    try:
        df = pd.read_csv(path, sep="\t")
    except Exception as exc:  # empty (0 bytes), binary, ragged
        raise CMTAError(f"{path}: not a readable {what} table ({exc})") from None
    if column not in df.columns:
        raise CMTAError(f"{path}: no {column!r} column")
    return df


def _reference_risks(path: Path) -> np.ndarray:
    """The fold's out-of-fold risks (``predictions.tsv``): at least one, every one finite."""
    df = _read_tsv(path, "out-of-fold predictions", "risk")
    if len(df) == 0:
        raise CMTAError(f"{path}: no out-of-fold predictions to compare with")
    risk = pd.to_numeric(df["risk"], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(risk)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise CMTAError(f"{path}: row {r + 2}, column 'risk': value {risk[r]:g} is not a finite number")
    return risk


def prepare_omics(fm: FoldModel, matrix: pd.DataFrame, summary: dict) -> list[np.ndarray]:
    """The new patients' genomics as the fold model reads them: one float32 array
    (patients x features) per family, transformed with the fold's statistics."""
    blocks = []
    for feats in fm.features:
        st = fm.stats.loc[feats]
        X = apply_preprocessing(
            matrix[feats].to_numpy(np.float64), st["modality"].to_numpy(),
            st["train_median"].to_numpy(float), st["train_mean"].to_numpy(float),
            st["train_std"].to_numpy(float), bool(summary["log1p_rnaseq"]),
            bool(summary["standardize"]),
        )
        blocks.append(X.astype(np.float32))
    return blocks


def predict_run(
    run_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    genomics_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    slide_sheet: str | os.PathLike | None = None,
    tiles_summary: str | os.PathLike | None = None,
    impute_missing_genes: bool = False,
    device: str = "cpu",
    cases: list[str] | None = None,
) -> pd.DataFrame:
    """Risk of every new patient under every fold model of ``run_dir`` (see module doc)."""
    from ..training.device import resolve_device

    run_dir, cohort_dir = Path(run_dir), Path(cohort_dir)
    folds = fold_dirs(run_dir)
    summary = read_summary(cohort_dir)
    dev = resolve_device(device, "--device")
    models = [load_fold_model(run_dir, k, d, cohort_dir, summary, dev) for k, d in folds.items()]
    name = models[0].checkpoint["model"]["name"]
    mods = modalities(name)
    ids, matrix, slides_of = _new_patients(
        name, mods, genomics_dir, features_dir, slide_sheet, tiles_summary, cases
    )
    if "omics" in mods:
        matrix = _with_needed_genes(matrix, models, impute_missing_genes, genomics_dir)
    fold_omics = {fm.fold: prepare_omics(fm, matrix, summary) if "omics" in mods else None
                  for fm in models}
    risk_of, surv_of = _run_models(models, ids, fold_omics, features_dir, slides_of, dev)
    out = _risk_table(models, ids, risk_of, surv_of)
    if "omics" in mods:  # per patient: the features filled with each fold's training median
        needed = sorted({f for fm in models for feats in fm.features for f in feats})
        out["genes_imputed"] = matrix.loc[ids, needed].isna().sum(axis=1).to_numpy()
    return out


def _new_patients(name, mods, genomics_dir, features_dir, slide_sheet, tiles_summary, cases):
    """(the new patients' ids, their genomic matrix or None, patient -> usable slides)."""
    matrix = None
    if genomics_dir is not None:
        _, matrix, _, _ = read_genomics_dir(genomics_dir)
    elif "omics" in mods:
        raise CMTAError(f"model {name!r} reads genomics: give the new patients' --genomics")
    slides = None
    if "path" in mods:
        if features_dir is None or (slide_sheet is None and tiles_summary is None):
            raise CMTAError(f"model {name!r} reads slides: give --features-dir and --slides")
        slides = read_slides(slide_sheet, tiles_summary)
        slides = slides[slides["usable"]]
    if cases:
        ids = [str(c) for c in cases]
        twice = [c for c in dict.fromkeys(ids) if ids.count(c) > 1]
        if twice:
            raise CMTAError(f"--cases: patient {twice[0]} is given twice (one risk per patient)")
    elif matrix is not None:
        ids = list(matrix.index)
    else:
        ids = sorted(slides["case_id"].unique())
    if not ids:
        raise CMTAError("no patients to predict")
    if matrix is not None:
        absent = [c for c in ids if c not in matrix.index]
        if absent:
            raise CMTAError(f"{genomics_dir}: no genomic profile for {len(absent)} patient(s): {', '.join(absent[:5])}")
        matrix = matrix.loc[ids]
    slides_of: dict[str, list[str]] = {}
    if slides is not None:
        slides_of = {c: sorted(g["slide_id"]) for c, g in slides.groupby("case_id")}
        without = [c for c in ids if c not in slides_of]
        if without:
            raise CMTAError(
                f"model {name!r} reads slides: no usable slide for {len(without)} patient(s) "
                f"({', '.join(without[:5])}) in {slide_sheet or tiles_summary}"
            )
    return ids, matrix, slides_of


def _with_needed_genes(matrix: pd.DataFrame, models, impute_missing_genes: bool, genomics_dir) -> pd.DataFrame:
    """``matrix`` with every feature the fold models read: a missing one is an error, or
    an empty column (imputed with each fold's training median) when asked."""
    needed = sorted({f for fm in models for feats in fm.features for f in feats})
    missing = [f for f in needed if f not in matrix.columns]
    if missing:
        if not impute_missing_genes:
            raise CMTAError(
                f"{genomics_dir}: {len(missing)} feature(s) the models read are missing: "
                f"{', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''} (give them, "
                "or --impute-missing-genes to use each fold's training median)"
            )
        log.warning("%d missing feature(s) imputed with each fold's training median: %s",
                    len(missing), ", ".join(missing[:10]))
        matrix = matrix.reindex(columns=list(matrix.columns) + missing)
    n_nan = int(matrix[needed].isna().to_numpy().sum())
    if n_nan:
        log.info("%d missing value(s) imputed with the training medians, as in training", n_nan)
    return matrix


def check_features(models, features_dir, slide_ids) -> None:
    """The new patients' features against what the models were trained on: the encoder
    the checkpoint records (one-line error for another's) and the width (path_dim)."""
    from ..features.files import check_encoder, features_encoder, find_feature_file, load_features

    spec = models[0].checkpoint["model"]
    path = find_feature_file(features_dir, slide_ids[0])
    if path is None:
        return  # load_bag names the missing file
    check_encoder(path, int(load_features(path).shape[1]), features_encoder(features_dir, slide_ids),
                  expected_dim=int(spec["path_dim"]), expected_encoder=spec.get("encoder", ""))


def _run_models(models, ids, fold_omics, features_dir, slides_of, dev):
    """Every fold model on every patient (each patient's bag is read once for all folds):
    (fold -> risks, fold -> survival curves)."""
    from ..features.files import load_bag
    from ..training.evaluate import fp32_forward

    risk_of = {fm.fold: [] for fm in models}
    surv_of = {fm.fold: [] for fm in models}
    with torch.no_grad():
        for i, case in enumerate(ids):
            bag = None
            if slides_of:
                if i == 0:
                    check_features(models, features_dir, slides_of[case])
                bag = torch.from_numpy(load_bag(features_dir, slides_of[case])).to(dev)
            for fm in models:
                omics = fold_omics[fm.fold]
                om = None if omics is None else [torch.from_numpy(b[i]).to(dev) for b in omics]
                out = fp32_forward(fm.model, bag, om)  # as training's evaluation: equal risks
                risk_of[fm.fold].append(float(out["risk"].float()[0]))
                surv_of[fm.fold].append(out["survival"].float().cpu().numpy()[0])
    return risk_of, surv_of


def _risk_table(models, ids, risk_of, surv_of) -> pd.DataFrame:
    """One row per patient: mean risk, percentile and group over the folds, mean survival
    curve, and each fold's risk and percentile."""
    risks, percentiles, survival = {}, {}, []
    for fm in models:
        risks[fm.fold] = np.array(risk_of[fm.fold])
        # predictions.tsv holds the risks with full precision (%.17g): a cohort patient
        # predicted again ties with its own out-of-fold risk
        percentiles[fm.fold] = percentile_of(risks[fm.fold], fm.reference_risk)
        survival.append(np.stack(surv_of[fm.fold]))
        seen = [c for c in ids if c in fm.training_cases]
        if seen:
            log.warning("fold %d: %d patient(s) were in its training data (in-sample risk): %s",
                        fm.fold, len(seen), ", ".join(seen[:5]))

    for fm in models:
        bad = ~np.isfinite(risks[fm.fold]) | ~np.isfinite(np.stack(surv_of[fm.fold])).all(axis=1)
        if bad.any():
            raise CMTAError(
                f"fold {fm.fold}: the model gives a non-finite risk for patient {ids[int(np.argmax(bad))]} "
                "(non-finite weights or inputs); no risk written"
            )
    out = pd.DataFrame({"case_id": ids})
    out["risk"] = np.mean([risks[k] for k in risks], axis=0)
    out["risk_percentile"] = np.mean([percentiles[k] for k in percentiles], axis=0)
    out["risk_group"] = np.where(out["risk_percentile"] > 50, "high", "low")
    surv = np.mean(survival, axis=0)
    for j in range(surv.shape[1]):
        out[f"survival_{j + 1}"] = surv[:, j]
    out["n_folds"] = len(models)
    for k in risks:
        out[f"risk_fold_{k}"] = risks[k]
    for k in percentiles:
        out[f"risk_percentile_fold_{k}"] = percentiles[k]
    return out


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_output(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.17g")  # round-trip risks
