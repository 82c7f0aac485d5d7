"""What training works on and with: a :class:`Patient`, the :class:`TrainSettings` (the
published settings plus honest selection by default) and the :class:`FoldResult`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..errors import CMTAError
from .losses import SIMILARITIES

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
    l1_modules: tuple = ()  # submodules the L1 penalty covers; empty = every weight
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
