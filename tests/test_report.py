"""Out-of-fold evaluation: c-index per fold against scikit-survival, log-rank, KM report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sksurv.compare import compare_survival
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from cmta_pipeline.cli import main
from cmta_pipeline.evaluation import cindex, logrank, risk_groups


def _predictions(rng, n=60, folds=3, signal=1.0):
    time = rng.exponential(30, n)
    event = rng.random(n) < 0.6
    risk = -signal * np.log(time) + rng.normal(0, 1, n)
    return pd.DataFrame({
        "case_id": [f"P{i}" for i in range(n)], "fold": np.arange(n) % folds,
        "risk": risk, "time": time, "event": event.astype(int), "censorship": (~event).astype(int),
    })


def test_cindex_matches_sksurv_and_hand_case():
    # hand case: the riskier patient dies first in 2 of the 3 comparable pairs
    assert cindex([3, 2, 1], [1, 2, 3], [1, 1, 0]) == 1.0
    assert cindex([1, 2, 3], [1, 2, 3], [1, 1, 0]) == 0.0
    assert cindex([2, 3, 1], [1, 2, 3], [1, 1, 1]) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    p = _predictions(rng)
    ref = concordance_index_censored(p.event.astype(bool), p.time, p.risk)[0]
    assert cindex(p.risk, p.time, p.event) == pytest.approx(ref)


def test_risk_groups_split_each_fold_at_its_median():
    p = pd.DataFrame({"fold": [0, 0, 0, 0, 1, 1], "risk": [1, 2, 3, 4, 100, 200]})
    assert list(risk_groups(p)) == [0, 0, 1, 1, 0, 1]  # fold 1's scale does not swamp fold 0


def test_logrank_matches_sksurv():
    rng = np.random.default_rng(1)
    p = _predictions(rng)
    g = risk_groups(p)
    chisq, pval = logrank(p.time, p.event, g)
    ref = compare_survival(Surv.from_arrays(p.event.astype(bool), p.time), g)
    assert (chisq, pval) == pytest.approx(ref)


def test_report_command(tmp_path, capsys):
    rng = np.random.default_rng(2)
    p = _predictions(rng, n=90, signal=2.0)
    for run, optimistic in (("cmta", False), ("snn", True)):
        for fold, part in p.groupby("fold"):
            d = tmp_path / "train" / run / f"fold_{fold}"
            d.mkdir(parents=True)
            part.to_csv(d / "predictions.tsv", sep="\t", index=False)
            (d / "summary.json").write_text(json.dumps({"selection": "best_heldout" if optimistic else "final", "optimistic": optimistic}))
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "train"), "-o", str(out)]) == 0
    summary = pd.read_csv(out / "cindex_summary.tsv", sep="\t").set_index("run")
    per_fold = [cindex(part.risk, part.time, part.event) for _, part in p.groupby("fold")]
    assert summary.loc["cmta", "cindex_mean"] == pytest.approx(np.mean(per_fold), abs=1e-4)
    assert summary.loc["cmta", "cindex_sd"] == pytest.approx(np.std(per_fold, ddof=1), abs=1e-4)
    assert summary.loc["cmta", "logrank_p"] < 0.05  # a strong planted signal separates the groups
    assert summary.loc["snn", "protocol"].startswith("OPTIMISTIC")
    assert (out / "km_cmta.png").stat().st_size > 10_000
    assert "OPTIMISTIC" in (out / "report.html").read_text()
    assert main(["report", str(tmp_path / "nothing"), "-o", str(out)]) == 2
