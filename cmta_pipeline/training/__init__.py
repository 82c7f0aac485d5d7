"""The training stage: one survival model trained on one cross-validation fold (``cmta
train``; rule file ``workflow/rules/training.smk``; docs/training.md).

Rooms: :mod:`.settings` (Patient, TrainSettings, FoldResult), :mod:`.losses` (survival NLL
and CMTA's alignment), :mod:`.bags` (order, sampling, bags read ahead), :mod:`.device`
(device and mixed precision), :mod:`.loop` (:func:`train_fold`), :mod:`.evaluate`,
:mod:`.metrics` (c-index), :mod:`.fold` (one fold of a cohort folder end to end, its
files and checkpoint), :mod:`.synthetic` (a synthetic cohort for tests).

>>> from cmta_pipeline.training import Patient, TrainSettings, train_fold
"""

from .bags import class_weights, subsample
from .device import resolve_device
from .evaluate import evaluate
from .loop import train_fold
from .metrics import cindex
from .settings import SELECTIONS, FoldResult, Patient, TrainSettings

__all__ = [
    "SELECTIONS", "FoldResult", "Patient", "TrainSettings", "class_weights", "cindex",
    "evaluate", "resolve_device", "subsample", "train_fold",
]
