"""Training and evaluation of survival models on one cross-validation fold."""

from .loop import (
    SELECTIONS,
    FoldResult,
    Patient,
    TrainSettings,
    class_weights,
    evaluate,
    resolve_device,
    subsample,
    train_fold,
)
from .metrics import cindex

__all__ = [
    "SELECTIONS", "FoldResult", "Patient", "TrainSettings", "class_weights", "cindex",
    "evaluate", "resolve_device", "subsample", "train_fold",
]
