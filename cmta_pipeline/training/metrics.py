"""Evaluation metrics on predicted risks, and how predicted risks are written."""

from __future__ import annotations

import math
import os

import numpy as np

from ..fileio import atomic_output


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


def write_risks(df, path: str | os.PathLike) -> None:
    """A predictions table with round-trip precision (``%.17g``): the report computes its
    metrics from these risks, and ``%.6g`` would turn risks that differ past the sixth digit
    (saturating hazards) into false ties."""
    with atomic_output(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.17g")
