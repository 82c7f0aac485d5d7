"""A synthetic cohort with a known survival signal, for tests, demos and benchmarks.

Each patient has a latent risk r ~ N(0, 1). Event times are exponential with hazard
proportional to exp(strength * r); censoring is uniform. The signal is planted in both
modalities: every genomic family has a random direction scaled by r plus noise, and a
fraction of the bag's patches carry a fixed direction scaled by r. ``shuffle=True``
permutes the survival outcomes over patients, which removes the signal (a control).
"""

from __future__ import annotations

import numpy as np
import torch

from .settings import Patient


def synthetic_cohort(
    n: int = 200,
    omic_sizes: tuple[int, ...] = (8, 12, 16, 10, 20, 14),
    path_dim: int = 64,
    bag_size: tuple[int, int] = (24, 64),
    strength: float = 2.5,
    signal_fraction: float = 0.3,
    n_bins: int = 4,
    seed: int = 0,
    shuffle: bool = False,
) -> list[Patient]:
    """``n`` patients; labels are quartile bins of the uncensored times."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(n)
    t_event = rng.exponential(1.0, n) / (0.05 * np.exp(strength * r))
    t_cens = rng.uniform(0, np.quantile(t_event, 0.95), n)
    time = np.minimum(t_event, t_cens)
    cens = (t_cens < t_event).astype(int)
    if shuffle:
        perm = rng.permutation(n)
        time, cens = time[perm], cens[perm]
    edges = np.quantile(time[cens == 0], np.linspace(0, 1, n_bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    labels = np.clip(np.searchsorted(edges, time, side="right") - 1, 0, n_bins - 1)

    directions = [rng.standard_normal(s) / np.sqrt(s) * 2 for s in omic_sizes]
    patch_dir = rng.standard_normal(path_dim)
    patch_dir /= np.linalg.norm(patch_dir) / 3
    patients = []
    for i in range(n):
        omics = [torch.tensor(d * r[i] + rng.standard_normal(len(d)), dtype=torch.float32)
                 for d in directions]
        m = int(rng.integers(bag_size[0], bag_size[1] + 1))
        bag = rng.standard_normal((m, path_dim))
        k = max(1, int(signal_fraction * m))
        bag[rng.choice(m, k, replace=False)] += r[i] * patch_dir
        patients.append(Patient(
            case_id=f"SYN-{i:04d}", bag=torch.tensor(bag, dtype=torch.float32), omics=omics,
            label=int(labels[i]), time=float(time[i]), censorship=int(cens[i]),
        ))
    return patients
