"""Feeding patients to the model: the epoch's order (class-balanced sampling), bags read
from disk in a background thread and kept in memory while they fit, optional subsampling
of large bags, and the copy of inputs and targets to the device."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from .. import compute
from .settings import Patient


def class_weights(patients: Sequence[Patient]) -> np.ndarray:
    """Per-patient sampling weights N / n_class over (time bin x censorship) classes."""
    keys = [(p.label, int(p.censorship)) for p in patients]
    counts: dict = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    w = np.array([len(keys) / counts[k] for k in keys], dtype=float)
    return w / w.sum()


def epoch_order(n: int, weights: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    if weights is None:
        return rng.permutation(n)
    return rng.choice(n, size=n, replace=True, p=weights)


def subsample(bag: torch.Tensor, cap: int, rng: np.random.Generator) -> torch.Tensor:
    """At most ``cap`` rows of ``bag``, chosen at random, kept in their original order."""
    if cap and bag.shape[0] > cap:
        idx = np.sort(rng.choice(bag.shape[0], size=cap, replace=False))
        return bag[torch.from_numpy(idx)]
    return bag


#: Share of the memory available at the start of training that bags read from disk may
#: keep (each is then read once per run instead of once per epoch and evaluation).
BAG_CACHE_SHARE = 0.5


class BagCache:
    """Bags read from disk (``Patient.bag`` callables), kept in memory while they fit in
    ``budget`` bytes; bags already in memory are not counted. Used by one thread at a time."""

    def __init__(self, budget: int):
        self.budget, self.used = int(budget), 0
        self.bags: dict[int, torch.Tensor] = {}

    @classmethod
    def for_this_job(cls) -> "BagCache":
        avail = compute.memory_available_bytes()
        return cls(0 if avail is None else int(avail * BAG_CACHE_SHARE))

    def get(self, p: Patient) -> torch.Tensor | None:
        if not callable(p.bag):
            return p.get_bag()
        key = id(p)
        if key in self.bags:
            return self.bags[key]
        bag = p.get_bag()
        if bag is not None and self.used + bag.nbytes <= self.budget:
            self.bags[key] = bag
            self.used += bag.nbytes
        return bag


def host_bag(p: Patient, pin: bool, cap: int = 0, rng=None,
              cache: BagCache | None = None) -> torch.Tensor | None:
    """The patient's bag in host memory (from ``cache`` when given), subsampled to ``cap``
    rows when ``rng`` is given, float32, and pinned when ``pin`` (so the copy to the GPU is
    asynchronous)."""
    bag = p.get_bag() if cache is None else cache.get(p)
    if bag is None:
        return None
    if rng is not None:
        bag = subsample(bag, cap, rng)
    bag = bag.to(torch.float32).contiguous()
    return bag.pin_memory() if pin else bag


def to_device(p: Patient, device, bag: torch.Tensor | None):
    """The patient's bag (already in host memory) and genomic families on ``device``."""
    if bag is not None:
        bag = bag.to(device, non_blocking=True)
    omics = None if p.omics is None else [o.to(device, dtype=torch.float32) for o in p.omics]
    return bag, omics


def prefetched_bags(patients: Sequence[Patient], device: torch.device, cap: int = 0, rng=None,
          cache: BagCache | None = None):
    """Yields ``(patient, host bag)`` in order, reading (and pinning, on CUDA) the next
    patient's bag in a background thread while the current one is used, so the GPU does
    not wait for the disk. The thread is the only user of ``rng`` and ``cache`` while this
    runs, in order, so subsampling is the same as reading in the main thread."""
    pin = device.type == "cuda"
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmta-bags") as pool:
        nxt = (pool.submit(host_bag, patients[0], pin, cap, rng, cache)
               if len(patients) else None)
        for k, p in enumerate(patients):
            bag = nxt.result()
            if k + 1 < len(patients):
                nxt = pool.submit(host_bag, patients[k + 1], pin, cap, rng, cache)
            yield p, bag


def targets(p: Patient, device):
    """(time-bin label, censorship) of the patient as tensors on ``device``."""
    return (torch.tensor([int(p.label)], device=device),
            torch.tensor([float(p.censorship)], device=device))
