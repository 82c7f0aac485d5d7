"""Evaluation of a model on a set of patients: whole bags in fp32, the loss, the c-index
and one row per patient (risk, hazards, survival)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .bags import BagCache, prefetched_bags, targets, to_device
from .losses import cmta_loss
from .metrics import cindex
from .settings import Patient, TrainSettings


def loss_options(model, s: TrainSettings) -> dict:
    """Keyword arguments of :func:`~.losses.cmta_loss` for ``model`` under ``s``."""
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
    opts = loss_options(model, s)
    for p, host_bag in prefetched_bags(patients, device, cache=cache):
        bag, omics = to_device(p, device, host_bag)
        y, c = targets(p, device)
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
