"""Evaluation metrics on predicted risks."""

from __future__ import annotations

import math

import numpy as np


def cindex(risk, time, censorship) -> float:
    """Harrell's c-index (sksurv ``concordance_index_censored``; event = 1 - censorship).

    NaN when no pair is comparable (e.g. no events), instead of raising.
    """
    from sksurv.metrics import concordance_index_censored

    risk = np.asarray(risk, dtype=float)
    time = np.asarray(time, dtype=float)
    event = 1 - np.asarray(censorship, dtype=int)
    if len(risk) < 2 or event.sum() == 0:
        return math.nan
    try:
        return float(concordance_index_censored(event.astype(bool), time, risk)[0])
    except (ValueError, ZeroDivisionError):
        return math.nan
