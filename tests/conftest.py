"""Shared fixtures. Real data is read from ../shared/data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CMTA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set CMTA_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def slides_dir(shared_data) -> Path:
    return shared_data / "slides"


@pytest.fixture(scope="session")
def tcga_dir(shared_data) -> Path:
    return shared_data / "tcga"


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread (deterministic, fair timings on a shared machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core the process may use, at most 4 (each worker's
    workflow runs peak at about 2 GB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 4))


def pytest_collection_modifyitems(config, items):
    """Longest first: the real-SLURM tests, then those marked ``slow``, then the rest, each
    group in collection order. With ``-n auto`` (the README's command) and
    ``--maxschedchunk 2`` (pyproject.toml) the workers take tests two at a time, so the long
    ones start early and the short ones fill in at the end instead of one worker finishing a
    long test alone."""

    def rank(item) -> int:
        if item.get_closest_marker("slurm"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items[:] = sorted(items, key=rank)  # stable: collection order within a group
