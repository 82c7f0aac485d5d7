"""In-memory training of one model on one cross-validation fold (:func:`train_fold`).

One patient per step (all slides pooled into one bag), as published. Model selection is
honest by default: the held-out fold never chooses anything. Every epoch is seeded from
(seed, epoch), so a run resumed from its state file is identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import CMTAError
from ..fileio import atomic_output
from .bags import BagCache, class_weights, epoch_order, prefetched_bags, targets, to_device
from .device import amp_dtype, grad_scaler, resolve_device
from .evaluate import evaluate, loss_options
from .losses import cmta_loss, l1_penalty
from .metrics import cindex
from .settings import FoldResult, Patient, TrainSettings

log = logging.getLogger(__name__)


@dataclass
class _Run:
    """What every epoch of one training run uses."""

    model: torch.nn.Module
    settings: TrainSettings
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None  # autocast dtype, None = fp32
    loss_options: dict
    weights: np.ndarray | None  # sampling weights of the training patients
    cache: BagCache


def train_fold(
    model: torch.nn.Module,
    train_patients: Sequence[Patient],
    eval_sets: dict[str, Sequence[Patient]],
    settings: TrainSettings | None = None,
    state_path: str | Path | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    resume_key: dict | None = None,
) -> FoldResult:
    """Train ``model`` on ``train_patients``; evaluate ``eval_sets`` after every epoch.

    Selection (``settings.selection``):

    * ``final``: the model after the last epoch (default; honest).
    * ``early_stopping``: the epoch with the best ``monitor`` on ``eval_sets[val_set]``
      (the inner validation split), stopping after ``patience`` epochs without
      improvement; honest as long as ``val_set`` is not the reported fold.
    * ``best_heldout``: the epoch with the best c-index on ``eval_sets[heldout_set]``,
      the published protocol. OPTIMISTIC: the reported fold chooses the epoch.

    ``state_path``: a file rewritten (atomically) after every epoch with everything
    needed to continue; if it exists at the start with the same settings and the same
    ``resume_key`` (e.g. the model's name and options), training resumes from it. ``on_epoch_end(epoch, row)`` is called after each epoch.
    Returns a :class:`FoldResult`; the model is left holding the selected weights.
    """
    s = (settings or TrainSettings()).validate()
    _check_sets(s, train_patients, eval_sets)
    run = _start(model, s, train_patients)
    state_path = Path(state_path) if state_path else None
    history, best, start = _resume(run, state_path, resume_key or {})

    stopped = start > s.epochs or (best.get("stop", False))
    last_eval: dict = {}
    for epoch in range(start, s.epochs + 1):
        if stopped:
            break
        t0 = time.perf_counter()
        row = _train_epoch(run, train_patients, epoch)
        last_eval = {}  # this epoch's evaluation, reused below if these weights are selected
        for name, pats in eval_sets.items():
            if pats:
                m, df = evaluate(model, pats, s, run.device, name, run.cache)
                last_eval[name] = (m, df)
                row[f"{name}_loss"], row[f"{name}_cindex"] = m["loss"], m["cindex"]
        row["seconds"] = time.perf_counter() - t0
        stopped = _update_selection(best, row, epoch, s, model)
        history.append(row)
        log.info(_progress(row, s))
        if state_path is not None:
            _save_state(state_path, run, history, best, epoch, resume_key or {})
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    return _selected(run, history, best, eval_sets, last_eval)


def _check_sets(s: TrainSettings, train_patients, eval_sets) -> None:
    if not train_patients:
        raise CMTAError("training: no training patients")
    if s.selection == "early_stopping" and not eval_sets.get(s.val_set):
        raise CMTAError(
            f"training.selection: early_stopping needs a non-empty {s.val_set!r} set "
            "(the inner validation split); use selection: final otherwise"
        )
    if s.selection == "best_heldout" and not eval_sets.get(s.heldout_set):
        raise CMTAError(f"training.selection: best_heldout needs the {s.heldout_set!r} set")


def _start(model, s: TrainSettings, train_patients) -> _Run:
    """The model on its device, the optimiser, scheduler, precision and sampling weights."""
    device = resolve_device(s.device)
    torch.manual_seed(s.seed)
    model.to(device)
    optimizer = _optimizer(model, s)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.epochs)
                 if s.scheduler == "cosine" else None)
    dtype = amp_dtype(device, s.amp)
    return _Run(
        model=model, settings=s, device=device, optimizer=optimizer, scheduler=scheduler,
        scaler=grad_scaler(device, dtype), dtype=dtype, loss_options=loss_options(model, s),
        weights=class_weights(train_patients) if s.weighted_sampler else None,
        cache=BagCache.for_this_job(),
    )


def _resume(run: _Run, state_path: Path | None, resume_key: dict) -> tuple[list, dict, int]:
    """(history, selection state, first epoch to run): from ``state_path`` when it was
    written with the same settings and model, else from the start."""
    history: list[dict] = []
    best = {"epoch": 0, "score": -math.inf, "state": None, "stale": 0}
    start = 1
    if state_path is None or not state_path.is_file():
        return history, best, start
    try:
        st = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged resume state is redone, never trusted
        log.warning("%s: unreadable resume state (%s); training from epoch 1", state_path, type(exc).__name__)
        return history, best, start
    if st.get("settings") == run.settings.as_dict() and st.get("resume_key") == resume_key:
        run.model.load_state_dict(st["model"])
        run.optimizer.load_state_dict(st["optimizer"])
        if run.scheduler is not None and st.get("scheduler"):
            run.scheduler.load_state_dict(st["scheduler"])
        if run.scaler.is_enabled() and st.get("scaler"):
            run.scaler.load_state_dict(st["scaler"])
        history = list(st["history"])
        best = dict(st["best"])
        start = int(st["epoch"]) + 1
        log.info("resuming from %s after epoch %d", state_path, start - 1)
    else:
        log.warning("%s was written with other settings or another model; starting afresh",
                    state_path)
    return history, best, start


#: training steps between checks that the loss is finite: each check waits for the GPU
#: once, instead of at every step (which stalls small bags)
FINITE_CHECK_STEPS = 32


def _train_epoch(run: _Run, train_patients: Sequence[Patient], epoch: int) -> dict:
    """One pass over the epoch's sample of training patients; returns the epoch's row
    (learning rate, mean losses, train c-index). Losses and risks are summed and kept on
    the device and read once at the end; the loss is checked finite every
    :data:`FINITE_CHECK_STEPS` steps and at the end (the error names the epoch and the
    first patient whose loss was not)."""
    s, model, optimizer, scaler = run.settings, run.model, run.optimizer, run.scaler
    torch.manual_seed(s.seed * 100_003 + epoch)  # dropout, per epoch
    rng = np.random.default_rng([s.seed, epoch])
    order = epoch_order(len(train_patients), run.weights, rng)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    sums = torch.zeros(3, dtype=torch.float64, device=run.device)  # loss, sur, sim
    risks: list[torch.Tensor] = []
    window: list[tuple[torch.Tensor, str]] = []  # (loss, patient) since the last check
    patients = [train_patients[i] for i in order]
    for step, (p, host_bag) in enumerate(
            prefetched_bags(patients, run.device, s.max_train_patches, rng, run.cache), start=1):
        bag, omics = to_device(p, run.device, host_bag)
        y, c = targets(p, run.device)
        with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
            out = model(bag, omics)
        loss, parts = cmta_loss(out, y, c, **run.loss_options)
        if s.l1 > 0:
            loss = loss + s.l1 * l1_penalty(model, s.l1_modules)
        window.append((loss.detach(), p.case_id))
        if step % FINITE_CHECK_STEPS == 0:
            window = _check_finite(window, epoch)
        scaler.scale(loss / s.grad_accum).backward()
        if step % s.grad_accum == 0 or step == len(order):
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        sums += torch.stack([loss.detach().double(), parts["sur"].double(),
                             parts["sim"].double() if "sim" in parts else sums.new_zeros(())])
        risks.append(out["risk"].detach().float()[0])
    _check_finite(window, epoch)
    if run.scheduler is not None:
        run.scheduler.step()
    total, sur, sim = sums.tolist()
    risk = dict(zip(order.tolist(), torch.stack(risks).cpu().tolist())) if risks else {}
    idx = sorted(risk)
    return {
        "epoch": epoch,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": total / len(order),
        "train_sur": sur / len(order),
        "train_sim": sim / len(order),
        "train_cindex": cindex([risk[i] for i in idx],
                               [train_patients[i].time for i in idx],
                               [train_patients[i].censorship for i in idx]),
    }


def _check_finite(window: list[tuple[torch.Tensor, str]], epoch: int) -> list:
    """Raise if a loss of ``window`` is not finite (one wait for the device); returns a
    new, empty window."""
    if window:
        losses = torch.stack([loss for loss, _ in window])
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise CMTAError(f"training: loss is {float(losses[i])} at epoch {epoch}, patient "
                            f"{window[i][1]}; lower the learning rate")
    return []


def _update_selection(best: dict, row: dict, epoch: int, s: TrainSettings, model) -> bool:
    """Selection bookkeeping after an epoch (the best score and its weights); returns True
    when early stopping says to stop."""
    score = None
    if s.selection == "early_stopping":
        v = row[f"{s.val_set}_{s.monitor}"]
        score = -v if s.monitor == "loss" else v
    elif s.selection == "best_heldout":
        score = row[f"{s.heldout_set}_cindex"]
    if score is not None and not math.isnan(score):
        if score > best["score"]:
            best.update(epoch=epoch, score=float(score), state=_cpu_state(model), stale=0)
        else:
            best["stale"] += 1
    if (s.selection == "early_stopping" and epoch >= s.min_epochs
            and best["stale"] >= s.patience):
        best["stop"] = True
        return True
    return False


def _selected(run: _Run, history: list, best: dict, eval_sets: dict, last_eval: dict) -> FoldResult:
    """The selected model (its weights loaded into ``run.model``) and its evaluation."""
    s, model = run.settings, run.model
    if s.selection == "final" or best["state"] is None:
        selected = history[-1]["epoch"]
    else:
        selected = best["epoch"]
        model.load_state_dict(best["state"])
    if selected != history[-1]["epoch"]:
        last_eval = {}  # another epoch's weights: evaluate them afresh
    frames, metrics = [], {}
    for name, pats in eval_sets.items():
        if pats:
            m, df = (last_eval[name] if name in last_eval
                     else evaluate(model, pats, s, run.device, name, run.cache))
            metrics[f"{name}_cindex"], metrics[f"{name}_loss"] = m["cindex"], m["loss"]
            frames.append(df)
    preds = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return FoldResult(
        history=history, selected_epoch=selected, selection=s.selection,
        optimistic=s.selection == "best_heldout", metrics=metrics, predictions=preds,
        state_dict=_cpu_state(model),
    )


def _optimizer(model, s: TrainSettings):
    params = [p for p in model.parameters() if p.requires_grad]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)


def _cpu_state(model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _progress(row: dict, s: TrainSettings) -> str:
    parts = [f"epoch {row['epoch']}/{s.epochs}", f"loss {row['train_loss']:.4f}",
             f"train c {row['train_cindex']:.3f}"]
    for k, v in row.items():
        if k.endswith("_cindex") and not k.startswith("train"):
            parts.append(f"{k[:-7]} c {v:.3f}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


def _save_state(path: Path, run: _Run, history, best, epoch, resume_key: dict) -> None:
    state = {
        "epoch": epoch,
        "model": _cpu_state(run.model),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else {},
        "scaler": run.scaler.state_dict(),  # {} when disabled; fp16's loss scale otherwise
        "history": history,
        "best": best,
        "settings": run.settings.as_dict(),
        "resume_key": resume_key,
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
