"""Issue 30: full-precision risks, site-preserved folds, external validation, the paper's
Table 1 values (tests/test_validation.py; docs/report.md, "Protocols")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmta_pipeline.report.metrics import evaluate_run
from cmta_pipeline.training.metrics import cindex, write_risks


def _close_risks(n=40, seed=0):
    """Risks that differ only past the sixth significant digit, and their survival."""
    rng = np.random.default_rng(seed)
    time = rng.uniform(1, 100, n)
    event = rng.integers(0, 2, n)
    event[:5] = 1
    # ordered against time (concordant); steps of 1e-6 above sksurv's tie tolerance (1e-8)
    risk = 123.456 + 1e-6 * np.argsort(np.argsort(-time))
    return pd.DataFrame({"case_id": [f"P{i}" for i in range(n)], "fold": 0, "risk": risk,
                         "time": time, "event": event, "censorship": 1 - event})


def test_risks_differing_past_the_sixth_digit_keep_their_order(tmp_path):
    df = _close_risks()
    exact = cindex(df["risk"], df["time"], df["censorship"])
    assert exact == pytest.approx(1.0)
    fold = tmp_path / "run" / "fold_0"
    fold.mkdir(parents=True)
    write_risks(df, fold / "predictions.tsv")
    res = evaluate_run("run", [fold / "predictions.tsv"])
    assert res.per_fold["cindex_harrell"].iloc[0] == pytest.approx(exact, abs=1e-12)
    # negative control: the former %.6g makes every risk a tie (c-index 0.5)
    df.to_csv(fold / "predictions.tsv", sep="\t", index=False, float_format="%.6g")
    res6 = evaluate_run("run", [fold / "predictions.tsv"])
    assert res6.per_fold["cindex_harrell"].iloc[0] == pytest.approx(0.5)
