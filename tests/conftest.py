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
