"""Survival metrics of the report against scikit-survival and against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sksurv.datasets import load_whas500
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from cmta_pipeline import evaluation as ev


@pytest.fixture(scope="session")
def whas500():
    """WHAS500 (shipped with scikit-survival), months; a fixed 4:1 train/test split; the risk
    is a linear score of age, heart rate and heart failure (higher = worse)."""
    X, y = load_whas500()
    risk = (X["age"].to_numpy(float) / 10 + X["hr"].to_numpy(float) / 30
            + (X["chf"].astype(str) == "1").to_numpy(float))
    time, event = y["lenfol"] / 30.44, y["fstat"]
    test = np.arange(len(y)) % 5 == 1
    return risk, time, event, ~test, test


def test_uno_auc_and_ibs_equal_sksurv_on_whas500(whas500):
    risk, time, event, tr, te = whas500
    y_tr, y_te = Surv.from_arrays(event[tr], time[tr]), Surv.from_arrays(event[te], time[te])
    tau = ev.censoring_tau(time[tr], event[tr])
    assert time[te].max() < tau  # this split needs no truncation: sksurv applies directly
    uno = ev.cindex_uno(risk[te], time[te], event[te], time[tr], event[tr])
    assert uno == pytest.approx(concordance_index_ipcw(y_tr, y_te, risk[te])[0])
    assert 0.6 < uno < 0.85  # age / heart rate / CHF are known risk factors
    harrell = ev.cindex(risk[te], time[te], event[te])
    assert harrell == pytest.approx(concordance_index_censored(event[te], time[te], risk[te])[0])
    for months in (12, 36):
        auc, why = ev.auc_at(months, risk[te], time[te], event[te], time[tr], event[tr])
        assert why == ""
        assert auc == pytest.approx(cumulative_dynamic_auc(y_tr, y_te, risk[te], [months])[0][0])
    # survival curves over four bins, as the models predict them
    edges = np.array([0, 6, 18, 40, 80.0])
    hazard = 1 / (1 + np.exp(-(risk[te] - risk.mean())[:, None] + np.array([2.0, 2.2, 2.4, 2.6])))
    surv = np.cumprod(1 - hazard, axis=1)
    ibs, why = ev.integrated_brier(surv, edges, time[te], event[te], time[tr], event[tr])
    grid = ev.brier_times(time[te], tau)
    ref = integrated_brier_score(y_tr, y_te, ev.survival_at(surv, edges, grid), grid)
    assert why == "" and ibs == pytest.approx(ref) and 0 < ibs < 0.25


def test_time_points_beyond_follow_up_are_skipped_with_the_reason(whas500):
    risk, time, event, tr, te = whas500
    auc, why = ev.auc_at(1000, risk[te], time[te], event[te], time[tr], event[tr])
    assert math.isnan(auc) and "beyond the held-out follow-up" in why
    short = time[te] < 20  # held-out follow-up ends before 36 months
    auc, why = ev.auc_at(36, risk[te][short], time[te][short], event[te][short], time[tr], event[tr])
    assert math.isnan(auc) and "follow-up" in why


def test_held_out_rows_beyond_the_training_follow_up_do_not_change_the_value():
    # truncating at tau must equal sksurv on data where sksurv can compute it directly
    rng = np.random.default_rng(0)
    t_tr, e_tr = rng.exponential(30, 200), rng.random(200) < 0.7
    t_te, e_te = rng.exponential(30, 60), rng.random(60) < 0.7
    r = -np.log(t_te) + rng.normal(0, 1, 60)
    tau = ev.censoring_tau(t_tr, e_tr)
    t_te = np.minimum(t_te, tau - 1)
    direct = cumulative_dynamic_auc(Surv.from_arrays(e_tr, t_tr), Surv.from_arrays(e_te, t_te), r, [12])[0][0]
    # the same patients followed longer than any training patient: sksurv alone would refuse
    longer = t_te.copy()
    longer[t_te > 30] += 1000
    with pytest.raises(ValueError):
        cumulative_dynamic_auc(Surv.from_arrays(e_tr, t_tr), Surv.from_arrays(e_te, longer), r, [12])
    assert ev.auc_at(12, r, longer, e_te, t_tr, e_tr)[0] == pytest.approx(direct)


def test_hand_computed_values_without_censoring():
    # no censoring anywhere: G = 1, so every weight is 1 and the metrics are plain counts
    t_tr, e_tr = np.array([1.0, 2, 3, 4, 5, 6, 7, 8]), np.ones(8, bool)
    time, event = np.array([1.5, 2.5, 3.5, 4.5]), np.ones(4, bool)
    risk = np.array([4.0, 2, 3, 1])  # pairs (i earlier than j): 5 of 6 concordant
    assert ev.cindex(risk, time, event) == pytest.approx(5 / 6)
    assert ev.cindex_uno(risk, time, event, t_tr, e_tr) == pytest.approx(5 / 6)
    # AUC at 3: cases {1.5, 2.5} (risks 4, 2), controls {3.5, 4.5} (risks 3, 1): 3 of 4 pairs
    assert ev.auc_at(3, risk, time, event, t_tr, e_tr)[0] == pytest.approx(3 / 4)
    # survival 0.5 everywhere: Brier score 0.25 at every time, so IBS = 0.25
    edges = np.array([0, 2, 4, 6, 9.0])
    half = np.full((4, 4), 0.5)
    assert ev.integrated_brier(half, edges, time, event, t_tr, e_tr)[0] == pytest.approx(0.25)
    # bins [0,2) [2,4) [4,6) [6,9]; the grid runs from the 10th to the 90th percentile of the
    # times, 1.8 to 4.2. Curves that drop to 0 at the end of each patient's bin (patient 1
    # dies in bin 1: S = 0 from e_1 = 2 on; patients 2 and 3 in bin 2; patient 4 in bin 3):
    # BS(t) = 1/4 on [1.8, 2) (patient 1 dead, S still 1), 0 on [2, 2.5), 1/4 on [2.5, 3.5),
    # 2/4 on [3.5, 4) (patients 2, 3 dead, S = 1 until e_2 = 4), 0 on [4, 4.2]:
    # integral 0.05 + 0.25 + 0.25 = 0.55 over 2.4 months (the 100-point trapezoid is within 0.01)
    sharp = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0.0]])
    assert ev.brier_times(time, 8.0)[[0, -1]] == pytest.approx([1.8, 4.2])
    assert ev.integrated_brier(sharp, edges, time, event, t_tr, e_tr)[0] == pytest.approx(0.55 / 2.4, abs=0.01)


def test_survival_is_a_step_function_of_the_bins():
    s = np.array([[0.9, 0.6, 0.3, 0.1]])
    edges = [0, 10, 20, 30, 40]
    got = ev.survival_at(s, edges, [0, 9.99, 10, 15, 20, 35, 40, 100])
    assert got.tolist() == [[1, 1, 0.9, 0.9, 0.6, 0.3, 0.1, 0.1]]


def test_too_few_events_gives_nan_and_the_reason():
    pred = pd.DataFrame({"risk": [1.0, 2, 3], "time": [1.0, 2, 3], "event": [0, 1, 0]})
    values, why = ev.fold_metrics(pred, None)
    assert all(math.isnan(v) for v in values.values())
    assert set(why) == set(ev.METRICS) and "1 held-out event(s)" in why["cindex_harrell"]
