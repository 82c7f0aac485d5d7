"""One model on one fold of a ``cmta cohort`` folder: patients in, files out.

Outputs in ``outdir`` (each written atomically; ``summary.json`` last):

* ``model.pt``: ``{"state_dict", "model": {name, omic_sizes, path_dim, size, fusion,
  options}, "settings", "fold", "family_names", "bin_edges", "selected_epoch",
  "selection", "optimistic", "metrics"}``; loads with ``torch.load(weights_only=True)``;
  :func:`load_checkpoint` rebuilds the model.
* ``epochs.tsv``: one row per epoch (losses, train / inner_val / heldout c-index, seconds)
  and ``selected`` (1 on the epoch whose weights are in model.pt).
* ``predictions.tsv``: out-of-fold predictions of the held-out patients: case_id, fold,
  encoder (models that read slides: the encoder of their features), risk, hazard_1..T, survival_1..T, time (months), event, censorship, label.
* ``train_predictions.tsv``: the same columns for the fold's training patients, from the
  selected weights in eval mode (in-sample): ``cmta report`` takes the censoring distribution
  of Uno's c-index, AUC and IBS and the honest risk-group threshold (training median) from it.
* ``summary.json``: fold, model, selection, optimistic, selected_epoch, metrics, counts,
  encoder (null for models that read no slides), bin_edges.
* ``.resume.pt`` while training (removed at the end): a killed job resumes from it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import CMTAError, load_refused
from ..fileio import atomic_output, fresh_outputs, write_text_atomic
from ..models import MODELS, build_model, modalities
from ..report.protocol import optimistic_reasons
from .evaluate import evaluate
from .loop import train_fold
from .metrics import write_risks
from .settings import Patient, TrainSettings

log = logging.getLogger(__name__)

#: What a fold run writes, summary.json (the completion marker) last; the resume state
#: (.resume.pt) is not among them: a rerun after a crash picks it up.
OUTPUTS = ("model.pt", "epochs.tsv", "predictions.tsv", "train_predictions.tsv", "summary.json")


def fold_patients(fold_data, features_dir: str | os.PathLike | None, needs_path: bool,
                  needs_omics: bool, cache_bags: bool = False) -> tuple[dict, list[str]]:
    """Split name -> list of :class:`Patient`, and the case_ids left out (no slides)."""
    from ..features.files import load_bag

    if needs_path and features_dir is None:
        raise CMTAError("this model reads patch features: give --features-dir")
    sets: dict[str, list[Patient]] = {}
    skipped = []
    for case_id, row in fold_data.patients.iterrows():
        slide_ids = list(row["slide_ids"])
        bag = None
        if needs_path:
            if not slide_ids:
                skipped.append(case_id)
                continue
            if cache_bags:
                bag = torch.from_numpy(load_bag(features_dir, slide_ids))
            else:
                def bag(sids=tuple(slide_ids)):
                    return torch.from_numpy(load_bag(features_dir, list(sids)))
        omics = None
        if needs_omics:
            if case_id not in fold_data.omics:
                raise CMTAError(f"fold {fold_data.fold}: no genomic profile for {case_id}")
            omics = [torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in fold_data.omics[case_id]]
        p = Patient(case_id=str(case_id), bag=bag, omics=omics, label=int(row["label"]),
                    time=float(row["survival_months"]), censorship=int(row["censorship"]))
        sets.setdefault(str(row["split"]), []).append(p)
    return sets, skipped


def fold_encoder(fold_data, features_dir) -> str:
    """The encoder the fold's feature files name ("" where none says)."""
    from ..features.files import features_encoder

    ids = [s for sids in fold_data.patients["slide_ids"] for s in sids][:8]
    return features_encoder(features_dir, ids)


def run_fold(
    cohort_dir: str | os.PathLike,
    fold: int,
    model_name: str,
    outdir: str | os.PathLike,
    features_dir: str | os.PathLike | None = None,
    settings: TrainSettings | None = None,
    size: str = "small",
    fusion: str = "concat",
    model_options: dict | None = None,
    cache_bags: bool = False,
    recipe: str = "cmta",
    protocol: str = "honest",
) -> dict:
    """Train ``model_name`` on fold ``fold`` and write the outputs; returns the summary.

    ``recipe`` (cmta | reference, :mod:`.recipes`) and ``protocol`` (honest | paper) are
    recorded in ``summary.json``; ``settings`` are already those of the recipe. A run is
    OPTIMISTIC when its epoch was chosen on the reported fold or its cohort's bins were cut
    on the whole cohort (``labels_from: all``)."""
    from ..cohort.files import load_fold

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # the earlier run's summary.json first, then its other outputs; the resume state stays
    with fresh_outputs(outdir, OUTPUTS, marker="summary.json"):
        s = (settings or TrainSettings()).validate()
        t0 = time.perf_counter()
        fd = load_fold(cohort_dir, fold)
        if model_name.lower() not in MODELS:
            raise CMTAError(f"unknown model {model_name!r}; choose one of {', '.join(MODELS)}")
        mods = modalities(model_name)
        sets, skipped = fold_patients(fd, features_dir, "path" in mods, "omics" in mods, cache_bags)
        if skipped:
            log.warning("fold %d: %d patients without slides left out of %s", fold, len(skipped), model_name)
        train = sets.get("train", [])
        if not train:
            raise CMTAError(f"{cohort_dir}: fold {fold} has no training patients usable by {model_name}")
        model, spec = _build_model(model_name, fd.omic_sizes, train, "path" in mods, s, size, fusion,
                                   model_options)
        if "path" in mods:  # which encoder made the features: predict refuses any other's
            spec["encoder"] = fold_encoder(fd, features_dir)
        eval_sets = {k: v for k, v in sets.items() if k in (s.val_set, s.heldout_set) and v}
        reasons = optimistic_reasons(s.selection, _labels_from(cohort_dir))
        log.info("fold %d, %s: %d train, %s; %s selection, recipe %s%s", fold, model_name, len(train),
                 ", ".join(f"{len(v)} {k}" for k, v in eval_sets.items()), s.selection, recipe,
                 f" (OPTIMISTIC: {'; '.join(reasons)})" if reasons else "")

        state_path = outdir / ".resume.pt"
        res = train_fold(model, train, eval_sets, s, state_path=state_path, resume_key=spec)

        _check_result(res, outdir / "model.pt")
        ckpt = _write_outputs(outdir, model, res, spec, s, fd, fold, train, bool(reasons))
        summary = {
            "fold": int(fold),
            "model": model_name.lower(),
            "recipe": recipe,
            "protocol": protocol,
            "selection": res.selection,
            "optimistic": bool(res.optimistic or reasons),
            "optimistic_reasons": reasons,
            "selected_epoch": int(res.selected_epoch),
            "epochs_run": len(res.history),
            "metrics": {k: (None if math.isnan(v) else round(float(v), 6)) for k, v in res.metrics.items()},
            "n_patients": {k: len(v) for k, v in sets.items()},
            "n_left_out_without_slides": len(skipped),
            "omic_sizes": spec["omic_sizes"],
            "path_dim": spec["path_dim"],
            "encoder": spec.get("encoder"),  # None: the model reads no slides
            "bin_edges": ckpt["bin_edges"],
            "seed": s.seed,
            "device": str(next(model.parameters()).device),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        write_text_atomic(outdir / "summary.json", json.dumps(summary, indent=2) + "\n")
        state_path.unlink(missing_ok=True)
        return summary


def _check_result(res, path: Path) -> None:
    """Finite weights and finite risks, or an error before anything is written (a NaN
    c-index from NaN risks never reaches summary.json with exit status 0)."""
    hint = "training diverged; nothing written (lower --lr, or check the inputs)"
    check_finite_state(res.state_dict, path, hint)
    preds = res.predictions
    if len(preds) and "risk" in preds.columns:
        bad = ~np.isfinite(preds["risk"].to_numpy(float))
        if bad.any():
            row = preds.iloc[int(np.argmax(bad))]
            raise CMTAError(f"{path}: the model gives a non-finite risk for patient {row['case_id']} "
                            f"({row.get('set', '')} set); {hint}")


def _build_model(model_name, omic_sizes, train, reads_path, s, size, fusion, model_options):
    """(the model, seeded, with the feature dimension of the training bags; its spec as
    the checkpoint records it)."""
    path_dim = int(train[0].get_bag().shape[1]) if reads_path else 1024
    options = dict(model_options or {})
    try:
        torch.manual_seed(s.seed)
        model = build_model(model_name, omic_sizes, path_dim=path_dim, size=size,
                            fusion=fusion, **options)
    except ValueError as exc:
        raise CMTAError(f"model {model_name!r}: {exc}") from exc
    spec = {"name": model_name.lower(), "omic_sizes": list(map(int, omic_sizes)),
            "path_dim": path_dim, "size": size, "fusion": fusion, "options": options}
    return model, spec


def _labels_from(cohort_dir) -> str | None:
    """The cohort's ``labels_from`` (folds.json), None if it does not say."""
    try:
        return json.loads((Path(cohort_dir) / "folds.json").read_text()).get("labels_from")
    except (OSError, ValueError):
        return None


def _write_outputs(outdir: Path, model, res, spec: dict, s: TrainSettings, fd, fold: int, train,
                   optimistic: bool) -> dict:
    """model.pt, epochs.tsv, predictions.tsv (held-out) and train_predictions.tsv; returns
    the checkpoint."""
    ckpt = {
        "state_dict": res.state_dict,
        "model": spec,
        "settings": s.as_dict(),
        "fold": int(fold),
        "family_names": list(fd.family_names),
        "bin_edges": [float(x) for x in np.asarray(fd.bin_edges)],
        "selected_epoch": int(res.selected_epoch),
        "selection": res.selection,
        "optimistic": optimistic,
        "metrics": {k: float(v) for k, v in res.metrics.items()},
    }
    with atomic_output(outdir / "model.pt") as tmp:
        torch.save(ckpt, tmp)

    hist = pd.DataFrame(res.history)
    hist.insert(1, "selected", (hist["epoch"] == res.selected_epoch).astype(int))
    with atomic_output(outdir / "epochs.tsv") as tmp:
        hist.to_csv(tmp, sep="\t", index=False, float_format="%.6g")

    preds = res.predictions
    preds = preds[preds["set"] == s.heldout_set].drop(columns="set") if len(preds) else preds
    if len(preds):
        preds.insert(1, "fold", int(fold))
        if spec.get("encoder"):  # the encoder whose features it read (models reading slides)
            preds.insert(2, "encoder", spec["encoder"])
    write_risks(preds, outdir / "predictions.tsv")

    # the training rows at the selected weights: their risks set the report's honest risk-group
    # threshold, their times and events its censoring distribution
    _, train_preds = evaluate(model, train, s, next(model.parameters()).device, "train")
    train_preds = train_preds.drop(columns="set")
    train_preds.insert(1, "fold", int(fold))
    write_risks(train_preds, outdir / "train_predictions.tsv")
    return ckpt


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model saved by :func:`run_fold`; returns (model in eval mode, checkpoint)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise load_refused(path, exc, "checkpoint") from None
    spec = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not spec or "state_dict" not in ckpt:
        raise CMTAError(f"{path}: not a `cmta train` checkpoint (no 'model' / 'state_dict')")
    try:
        model = build_model(spec["name"], spec["omic_sizes"], path_dim=spec["path_dim"],
                            size=spec["size"], fusion=spec["fusion"], **spec["options"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CMTAError(f"{path}: the checkpoint's model {spec.get('name')!r} cannot be rebuilt "
                        f"({type(exc).__name__}: {exc})") from None
    check_finite_state(ckpt["state_dict"], path)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CMTAError(f"{path}: the weights do not fit model {spec['name']!r} ({first})") from None
    return model.eval(), ckpt


def check_finite_state(state: dict, path, hint: str = "the weights are damaged (retrain the fold)") -> None:
    """Every floating-point tensor of a state dict finite; else an error naming the file,
    the tensor and the first bad element (NaN weights are never used nor written)."""
    from ..genomics.tables import bad_value_text, first_bad_cell

    if not isinstance(state, dict):
        raise CMTAError(f"{path}: 'state_dict' is a {type(state).__name__}, not a mapping of tensors")
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
            arr = t.detach().float().cpu().numpy()
            at = first_bad_cell(arr, allow_nan=False)
            if at is not None:
                raise CMTAError(f"{path}: tensor {name!r}, element {list(at)}: value "
                                f"{bad_value_text(float(arr[at]), None)}; {hint}")
