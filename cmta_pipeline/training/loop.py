"""In-memory training of one model on one cross-validation fold.

One patient per step (all slides pooled into one bag), as published. Model selection is
honest by default: the held-out fold never chooses anything. Every epoch is seeded from
(seed, epoch), so a run resumed from its state file is identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import compute
from ..errors import CMTAError
from ..losses import SIMILARITIES, cmta_loss
from .metrics import cindex

log = logging.getLogger(__name__)

SELECTIONS = ("final", "early_stopping", "best_heldout")


@dataclass
class Patient:
    """One patient: a bag of patch features and/or genomic families, and survival.

    ``bag`` is an (M, D) tensor, None, or a zero-argument callable returning the tensor
    (so bags can stay on disk until used). ``omics`` is a list of 1-D tensors or None.
    ``label`` is the time bin, ``censorship`` 1 = censored.
    """

    case_id: str
    bag: torch.Tensor | Callable[[], torch.Tensor] | None
    omics: list[torch.Tensor] | None
    label: int
    time: float
    censorship: int

    def get_bag(self) -> torch.Tensor | None:
        b = self.bag() if callable(self.bag) else self.bag
        if b is not None and not isinstance(b, torch.Tensor):
            b = torch.as_tensor(np.asarray(b), dtype=torch.float32)
        return b


@dataclass
class TrainSettings:
    """Training options; the defaults are the published settings (plus honest selection)."""

    epochs: int = 30
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-5
    scheduler: str = "none"  # none | cosine
    grad_accum: int = 1  # patients per optimiser step
    alpha: float = 1.0  # weight of the alignment loss (CMTA only)
    similarity: str = "l1"  # l1 | mse | kl | cosine
    censor_weight: float = 0.0  # the NLL's alpha (0 = pure NLL, as published)
    l1: float = 0.0  # L1 penalty on every weight (MCAT's lambda_reg with reg_type all/omic)
    weighted_sampler: bool = True  # balance (time bin x censorship) classes, as published
    max_train_patches: int = 0  # 0 = whole bags (published); N = subsample larger bags (departure)
    selection: str = "final"  # final | early_stopping | best_heldout (optimistic)
    monitor: str = "loss"  # early stopping on the inner validation "loss" or "cindex"
    patience: int = 5
    min_epochs: int = 5
    val_set: str = "inner_val"
    heldout_set: str = "heldout"
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (bf16 where native, else fp16 + GradScaler)

    def validate(self) -> "TrainSettings":
        checks = [
            (self.optimizer in ("sgd", "adam", "adamw"), "optimizer must be sgd, adam or adamw"),
            (self.scheduler in ("none", "cosine"), "scheduler must be none or cosine"),
            (self.similarity in SIMILARITIES, f"similarity must be one of {SIMILARITIES}"),
            (self.selection in SELECTIONS, f"selection must be one of {SELECTIONS}"),
            (self.monitor in ("loss", "cindex"), "monitor must be loss or cindex"),
            (self.epochs >= 1 and self.grad_accum >= 1, "epochs and grad_accum must be >= 1"),
            (self.max_train_patches >= 0, "max_train_patches must be >= 0"),
            (self.l1 >= 0, "l1 must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise CMTAError(f"training settings: {msg}")
        return self

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class FoldResult:
    history: list[dict]  # one row per epoch
    selected_epoch: int
    selection: str
    optimistic: bool  # True when the reported fold chose the epoch
    metrics: dict[str, float]  # "<set>_cindex" of the selected model
    predictions: pd.DataFrame  # one row per patient of every eval set
    state_dict: dict = field(repr=False, default_factory=dict)


# --------------------------------------------------------------------------- helpers


def resolve_device(name: str, option: str = "training.device") -> torch.device:
    """The training / prediction device, checked and made current (see
    :func:`cmta_pipeline.compute.resolve_device`); ``option`` names it in errors."""
    return compute.resolve_device(name, option)


def cuda_bf16_native() -> bool:
    """True if the current GPU runs bf16 in hardware (compute capability 8.0 and later);
    older GPUs emulate it, slowly."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no including_emulation
        return torch.cuda.get_device_capability()[0] >= 8


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of training steps: bf16 on GPUs with native bf16, else fp16
    (which needs a GradScaler); None (fp32) on CPU or with ``amp`` off."""
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if cuda_bf16_native() else torch.float16


def _grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def class_weights(patients: Sequence[Patient]) -> np.ndarray:
    """Per-patient sampling weights N / n_class over (time bin x censorship) classes."""
    keys = [(p.label, int(p.censorship)) for p in patients]
    counts: dict = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    w = np.array([len(keys) / counts[k] for k in keys], dtype=float)
    return w / w.sum()


def epoch_order(n: int, weights: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    if weights is None:
        return rng.permutation(n)
    return rng.choice(n, size=n, replace=True, p=weights)


def subsample(bag: torch.Tensor, cap: int, rng: np.random.Generator) -> torch.Tensor:
    """At most ``cap`` rows of ``bag``, chosen at random, kept in their original order."""
    if cap and bag.shape[0] > cap:
        idx = np.sort(rng.choice(bag.shape[0], size=cap, replace=False))
        return bag[torch.from_numpy(idx)]
    return bag


#: Share of the memory available at the start of training that bags read from disk may
#: keep (each is then read once per run instead of once per epoch and evaluation).
BAG_CACHE_SHARE = 0.5


class BagCache:
    """Bags read from disk (``Patient.bag`` callables), kept in memory while they fit in
    ``budget`` bytes; bags already in memory are not counted. Used by one thread at a time."""

    def __init__(self, budget: int):
        self.budget, self.used = int(budget), 0
        self.bags: dict[int, torch.Tensor] = {}

    @classmethod
    def for_this_job(cls) -> "BagCache":
        avail = compute.memory_available_bytes()
        return cls(0 if avail is None else int(avail * BAG_CACHE_SHARE))

    def get(self, p: Patient) -> torch.Tensor | None:
        if not callable(p.bag):
            return p.get_bag()
        key = id(p)
        if key in self.bags:
            return self.bags[key]
        bag = p.get_bag()
        if bag is not None and self.used + bag.nbytes <= self.budget:
            self.bags[key] = bag
            self.used += bag.nbytes
        return bag


def _host_bag(p: Patient, pin: bool, cap: int = 0, rng=None,
              cache: BagCache | None = None) -> torch.Tensor | None:
    """The patient's bag in host memory (from ``cache`` when given), subsampled to ``cap``
    rows when ``rng`` is given, float32, and pinned when ``pin`` (so the copy to the GPU is
    asynchronous)."""
    bag = p.get_bag() if cache is None else cache.get(p)
    if bag is None:
        return None
    if rng is not None:
        bag = subsample(bag, cap, rng)
    bag = bag.to(torch.float32).contiguous()
    return bag.pin_memory() if pin else bag


def _inputs(p: Patient, device, bag: torch.Tensor | None):
    if bag is not None:
        bag = bag.to(device, non_blocking=True)
    omics = None if p.omics is None else [o.to(device, dtype=torch.float32) for o in p.omics]
    return bag, omics


def _bags(patients: Sequence[Patient], device: torch.device, cap: int = 0, rng=None,
          cache: BagCache | None = None):
    """Yields ``(patient, host bag)`` in order, reading (and pinning, on CUDA) the next
    patient's bag in a background thread while the current one is used, so the GPU does
    not wait for the disk. The thread is the only user of ``rng`` and ``cache`` while this
    runs, in order, so subsampling is the same as reading in the main thread."""
    pin = device.type == "cuda"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmta-bags") as pool:
        nxt = (pool.submit(_host_bag, patients[0], pin, cap, rng, cache)
               if len(patients) else None)
        for k, p in enumerate(patients):
            bag = nxt.result()
            if k + 1 < len(patients):
                nxt = pool.submit(_host_bag, patients[k + 1], pin, cap, rng, cache)
            yield p, bag


def _targets(p: Patient, device):
    return (torch.tensor([int(p.label)], device=device),
            torch.tensor([float(p.censorship)], device=device))


def _loss_options(model, s: TrainSettings) -> dict:
    # The CMTA ablations "no alignment" / "no stop-gradient" live on the model.
    alpha = s.alpha if getattr(model, "alignment", True) else 0.0
    return dict(alpha=alpha, similarity=s.similarity,
                detach=getattr(model, "detach_targets", True), censor_weight=s.censor_weight)


def fp32_forward(model, bag: torch.Tensor | None, omics: list[torch.Tensor] | None) -> dict:
    """``model(bag, omics)`` in fp32 without autograd, whatever autocast is active: what
    evaluation during training and ``cmta predict`` both run, so that the held-out risks
    of ``predictions.tsv`` and a later prediction of the same patients are equal."""
    dev = next(model.parameters()).device
    with torch.no_grad(), torch.autocast(dev.type, enabled=False):
        return model(bag, omics)


@torch.no_grad()
def evaluate(model, patients: Sequence[Patient], settings: TrainSettings | None = None,
             device: torch.device | str = "cpu", set_name: str = "",
             cache: BagCache | None = None) -> tuple[dict, pd.DataFrame]:
    """Loss and c-index of ``model`` on ``patients`` (whole bags, fp32), and one row per
    patient. ``cache``: bags kept between calls (see :class:`BagCache`)."""
    s = settings or TrainSettings()
    device = torch.device(device)
    model.eval()
    rows, losses = [], []
    opts = _loss_options(model, s)
    for p, host_bag in _bags(patients, device, cache=cache):
        bag, omics = _inputs(p, device, host_bag)
        y, c = _targets(p, device)
        out = fp32_forward(model, bag, omics)
        loss, _ = cmta_loss(out, y, c, **opts)
        losses.append(float(loss))
        hz = out["hazards"].float().cpu().numpy()[0]
        sv = out["survival"].float().cpu().numpy()[0]
        row = {"case_id": p.case_id, "set": set_name, "risk": float(out["risk"].float()[0])}
        row.update({f"hazard_{i + 1}": float(v) for i, v in enumerate(hz)})
        row.update({f"survival_{i + 1}": float(v) for i, v in enumerate(sv)})
        row.update({"time": float(p.time), "event": int(1 - p.censorship),
                    "censorship": int(p.censorship), "label": int(p.label)})
        rows.append(row)
    df = pd.DataFrame(rows)
    ci = cindex(df["risk"], df["time"], df["censorship"]) if len(df) else math.nan
    return {"loss": float(np.mean(losses)) if losses else math.nan, "cindex": ci}, df


def _optimizer(model, s: TrainSettings):
    params = [p for p in model.parameters() if p.requires_grad]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)


def _cpu_state(model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- the loop


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
    if not train_patients:
        raise CMTAError("training: no training patients")
    if s.selection == "early_stopping" and not eval_sets.get(s.val_set):
        raise CMTAError(
            f"training.selection: early_stopping needs a non-empty {s.val_set!r} set "
            "(the inner validation split); use selection: final otherwise"
        )
    if s.selection == "best_heldout" and not eval_sets.get(s.heldout_set):
        raise CMTAError(f"training.selection: best_heldout needs the {s.heldout_set!r} set")

    device = resolve_device(s.device)
    torch.manual_seed(s.seed)
    model.to(device)
    optimizer = _optimizer(model, s)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.epochs)
                 if s.scheduler == "cosine" else None)
    dtype = amp_dtype(device, s.amp)
    scaler = _grad_scaler(device, dtype)
    opts = _loss_options(model, s)
    weights = class_weights(train_patients) if s.weighted_sampler else None
    cache = BagCache.for_this_job()

    history: list[dict] = []
    best = {"epoch": 0, "score": -math.inf, "state": None, "stale": 0}
    start = 1
    state_path = Path(state_path) if state_path else None
    if state_path is not None and state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if st.get("settings") == s.as_dict() and st.get("resume_key") == (resume_key or {}):
            model.load_state_dict(st["model"])
            optimizer.load_state_dict(st["optimizer"])
            if scheduler is not None and st.get("scheduler"):
                scheduler.load_state_dict(st["scheduler"])
            if scaler.is_enabled() and st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
            history = list(st["history"])
            best = dict(st["best"])
            start = int(st["epoch"]) + 1
            log.info("resuming from %s after epoch %d", state_path, start - 1)
        else:
            log.warning("%s was written with other settings or another model; starting afresh",
                        state_path)

    stopped = start > s.epochs or (best.get("stop", False))
    last_eval: dict = {}
    for epoch in range(start, s.epochs + 1):
        if stopped:
            break
        t0 = time.perf_counter()
        torch.manual_seed(s.seed * 100_003 + epoch)  # dropout, per epoch
        rng = np.random.default_rng([s.seed, epoch])
        order = epoch_order(len(train_patients), weights, rng)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "sur": 0.0, "sim": 0.0}
        train_risk: dict[int, float] = {}
        patients = [train_patients[i] for i in order]
        for step, (i, (p, host_bag)) in enumerate(
                zip(order, _bags(patients, device, s.max_train_patches, rng, cache)), start=1):
            bag, omics = _inputs(p, device, host_bag)
            y, c = _targets(p, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model(bag, omics)
            loss, parts = cmta_loss(out, y, c, **opts)
            if s.l1 > 0:
                loss = loss + s.l1 * sum(w.abs().sum() for w in model.parameters())
            if not torch.isfinite(loss):
                raise CMTAError(f"training: loss is {float(loss)} at epoch {epoch}, patient "
                                f"{p.case_id}; lower the learning rate")
            scaler.scale(loss / s.grad_accum).backward()
            if step % s.grad_accum == 0 or step == len(order):
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            sums["loss"] += float(loss.detach())
            sums["sur"] += parts["sur"]
            sums["sim"] += parts.get("sim", 0.0)
            train_risk[int(i)] = float(out["risk"].detach().float()[0])
        if scheduler is not None:
            scheduler.step()
        idx = sorted(train_risk)
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": sums["loss"] / len(order),
            "train_sur": sums["sur"] / len(order),
            "train_sim": sums["sim"] / len(order),
            "train_cindex": cindex([train_risk[i] for i in idx],
                                   [train_patients[i].time for i in idx],
                                   [train_patients[i].censorship for i in idx]),
        }
        last_eval = {}  # this epoch's evaluation, reused below if these weights are selected
        for name, pats in eval_sets.items():
            if pats:
                m, df = evaluate(model, pats, s, device, name, cache)
                last_eval[name] = (m, df)
                row[f"{name}_loss"], row[f"{name}_cindex"] = m["loss"], m["cindex"]
        row["seconds"] = time.perf_counter() - t0

        # selection bookkeeping
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
            stopped = True
        history.append(row)
        log.info(_progress(row, s))
        if state_path is not None:
            _save_state(state_path, model, optimizer, scheduler, scaler, history, best,
                        epoch, s, resume_key or {})
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)

    # the selected model
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
                     else evaluate(model, pats, s, device, name, cache))
            metrics[f"{name}_cindex"], metrics[f"{name}_loss"] = m["cindex"], m["loss"]
            frames.append(df)
    preds = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return FoldResult(
        history=history, selected_epoch=selected, selection=s.selection,
        optimistic=s.selection == "best_heldout", metrics=metrics, predictions=preds,
        state_dict=_cpu_state(model),
    )


def _progress(row: dict, s: TrainSettings) -> str:
    parts = [f"epoch {row['epoch']}/{s.epochs}", f"loss {row['train_loss']:.4f}",
             f"train c {row['train_cindex']:.3f}"]
    for k, v in row.items():
        if k.endswith("_cindex") and not k.startswith("train"):
            parts.append(f"{k[:-7]} c {v:.3f}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


def _save_state(path: Path, model, optimizer, scheduler, scaler, history, best, epoch, s,
                resume_key: dict) -> None:
    from ..fileio import atomic_output

    state = {
        "epoch": epoch,
        "model": _cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "scaler": scaler.state_dict(),  # {} when disabled; fp16's loss scale otherwise
        "history": history,
        "best": best,
        "settings": s.as_dict(),
        "resume_key": resume_key,
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
