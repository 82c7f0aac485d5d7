"""Shared by the training tests: a fold trained from a fixed seed that can be killed."""

from __future__ import annotations

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
