"""Survival labels: the discrete-time bins of MCAT/CMTA (quartiles of the uncensored
times, outer edges widened) and each patient's bin."""

from __future__ import annotations

import numpy as np

from ..errors import CMTAError

EPS = 1e-6  # widening of the outer bin edges, as in MCAT/CMTA


def fit_bin_edges(times, censorship, n_bins: int = 4, eps: float = EPS) -> np.ndarray:
    """``n_bins + 1`` edges: quantiles of the uncensored times, outer edges widened to
    the min and max of all ``times`` (as MCAT/CMTA do, on whatever rows are given)."""
    times = np.asarray(times, dtype=float)
    cens = np.asarray(censorship)
    unc = times[cens == 0]
    if len(unc) < n_bins:
        raise CMTAError(
            f"only {len(unc)} uncensored patients to fit {n_bins} survival bins; use fewer bins"
        )
    edges = np.quantile(unc, np.linspace(0, 1, n_bins + 1))
    edges[0] = times.min() - eps
    edges[-1] = times.max() + eps
    if np.any(np.diff(edges) <= 0):
        raise CMTAError(
            f"survival bins are not distinct ({np.round(edges, 3).tolist()}): too few "
            "distinct event times for this many bins; use fewer bins"
        )
    return edges


def assign_labels(times, edges: np.ndarray) -> np.ndarray:
    """Bin index of each time; bins are [e_i, e_i+1), times outside go to the end bins."""
    return np.searchsorted(np.asarray(edges)[1:-1], np.asarray(times, float), side="right").astype(int)
