"""Shared by the training tests: a fold trained from a fixed seed that can be killed, and
run folders of synthetic held-out predictions for the report and Table 1 tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cmta_pipeline.training import train_fold


def killable_fold(make_model, train, sets, settings, state, stop_at=None, **kw):
    """``train_fold`` of ``make_model()`` (seed 0) with its resume file at ``state``,
    raising KeyboardInterrupt at the end of epoch ``stop_at`` as a kill would."""
    torch.manual_seed(0)

    def kill(epoch, row):
        if epoch == stop_at:
            raise KeyboardInterrupt

    return train_fold(make_model(), train, sets, settings, state_path=state,
                      on_epoch_end=kill, **kw)


def fake_run(root: Path, run: str, folds: int, n: int, seed: int, summary: dict) -> None:
    """``root/train/<run>/fold_<k>/``: ``predictions.tsv`` of ``n`` patients whose risk
    predicts their time (seeded), and ``summary.json`` = {"fold": k, **summary}."""
    rng = np.random.default_rng(seed)
    for k in range(folds):
        d = root / "train" / run / f"fold_{k}"
        d.mkdir(parents=True)
        risk = rng.normal(size=n)
        pd.DataFrame({"case_id": [f"p{k}_{i}" for i in range(n)], "fold": k, "risk": risk,
                      "time": np.exp(-risk + rng.normal(size=n)) * 20, "event": (np.arange(n) % 3 > 0).astype(int)}
                     ).to_csv(d / "predictions.tsv", sep="\t", index=False)
        (d / "summary.json").write_text(json.dumps({"fold": k, **summary}))
