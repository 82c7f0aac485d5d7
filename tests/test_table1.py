"""Table 1 (cmta table1), the coxnet floor and the paired bootstrap comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _training_helpers import fake_run
from sksurv.metrics import concordance_index_censored

from cmta_pipeline import genomics as g
from cmta_pipeline.cli import main
from cmta_pipeline.cohort import build_cohort, load_fold
from cmta_pipeline.report.paired import (
    pair_matrices,
    paired_difference,
    paired_table,
    run_pairs,
    weighted_cindex,
)
from cmta_pipeline.report.protocol import sd_ddof
from cmta_pipeline.report.table1 import build_table1, write_table1
from cmta_pipeline.training.coxnet import CoxnetSettings, design, run_coxnet_fold

# ---- coxnet ------------------------------------------------------------------------


def _cohort(tmp_path: Path, shuffle: bool, n: int = 150) -> Path:
    """A genomic table whose first two genes carry the risk (or, shuffled, none), 3 folds."""
    rng = np.random.default_rng(0)
    genes = rng.normal(size=(n, 12))
    risk = genes[:, 0] + 0.7 * genes[:, 1]
    time = 30 * np.exp(-risk + 0.3 * rng.normal(size=n))
    censored = (rng.random(n) < 0.3).astype(int)
    if shuffle:  # the outcomes of other patients: no signal left
        perm = rng.permutation(n)
        time, censored = time[perm], censored[perm]
    ids = [f"TCGA-AA-{i:04d}" for i in range(n)]
    df = pd.DataFrame({"case_id": ids, "slide_id": [f"{c}-01Z-00-DX1" for c in ids],
                       "survival_months": time.round(3), "censorship": censored,
                       **{f"G{j}_rnaseq": genes[:, j] for j in range(12)}})
    table = tmp_path / "t.csv"
    df.to_csv(table, index=False)
    fams = tmp_path / "f.csv"
    fams.write_text("A,B\n" + "\n".join(f"G{j},G{j + 6}" for j in range(6)) + "\n")
    gdir = tmp_path / "g"
    g.write_genomics(g.load_wide_table(table), g.read_families(fams), gdir)
    build_cohort(gdir, tmp_path / "cohort", n_folds=3)
    return tmp_path / "cohort"


def test_coxnet_is_sksurvs_fit_on_the_training_rows(tmp_path):
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.util import Surv

    cohort = _cohort(tmp_path, shuffle=False)
    summary = run_coxnet_fold(cohort, 0, tmp_path / "run")
    pred = pd.read_csv(tmp_path / "run" / "predictions.tsv", sep="\t")
    fd = load_fold(cohort, 0)
    X, pats = design(fd)
    tr = (pats["split"] == "train").to_numpy()
    y = Surv.from_arrays(pats.loc[tr, "censorship"].to_numpy() == 0, pats.loc[tr, "survival_months"])
    s = CoxnetSettings()
    path = CoxnetSurvivalAnalysis(l1_ratio=s.l1_ratio, n_alphas=s.n_alphas,
                                  alpha_min_ratio=s.alpha_min_ratio).fit(X[tr], y)
    direct = CoxnetSurvivalAnalysis(l1_ratio=s.l1_ratio, alphas=path.alphas_).fit(X[tr], y)
    held = (pats["split"] == "heldout").to_numpy()
    want = direct.predict(X[held], alpha=summary["coxnet"]["alpha"])
    assert list(pred["case_id"]) == list(pats.index[held])
    np.testing.assert_allclose(pred["risk"], want, rtol=1e-4, atol=1e-5)
    assert summary["coxnet"]["alpha"] in list(path.alphas_)
    # the networks' columns, survival falling with the bins, the signal found
    assert {"hazard_4", "survival_4", "time", "event", "censorship", "label", "fold"} <= set(pred.columns)
    assert (np.diff(pred[[f"survival_{k}" for k in range(1, 5)]].to_numpy(), axis=1) <= 1e-9).all()
    assert summary["metrics"]["heldout_cindex"] > 0.7
    assert summary["optimistic"] is False and summary["recipe"] == "coxnet"
    # deterministic: the same fold again gives the same file
    run_coxnet_fold(cohort, 0, tmp_path / "again")
    assert (tmp_path / "again" / "predictions.tsv").read_text() == (tmp_path / "run" / "predictions.tsv").read_text()


def test_coxnet_on_shuffled_outcomes_is_near_chance(tmp_path):
    """Negative control through the same code: outcomes of other patients, no signal."""
    cohort = _cohort(tmp_path, shuffle=True)
    c = [run_coxnet_fold(cohort, k, tmp_path / f"run{k}")["metrics"]["heldout_cindex"] for k in range(3)]
    assert 0.4 < np.mean(c) < 0.6, c


def test_cmta_train_runs_coxnet(tmp_path):
    cohort = _cohort(tmp_path, shuffle=False)
    assert main(["train", "--cohort", str(cohort), "--fold", "1", "--model", "coxnet",
                 "-o", str(tmp_path / "cli")]) == 0
    for name in ("model.pt", "epochs.tsv", "predictions.tsv", "train_predictions.tsv", "summary.json"):
        assert (tmp_path / "cli" / name).is_file(), name


# ---- paired comparisons -------------------------------------------------------------


def test_pair_matrices_are_sksurvs_cindex_with_ties_and_resamples():
    rng = np.random.default_rng(3)
    for _ in range(10):
        n = 50
        t = rng.integers(1, 15, n).astype(float)
        e = rng.random(n) < 0.6
        r = rng.integers(0, 4, n).astype(float)
        comp, score = pair_matrices(t, e, r)
        assert weighted_cindex(comp, score, np.ones(n))[0] == pytest.approx(
            concordance_index_censored(e, t, r)[0], abs=1e-12)
        w = rng.multinomial(n, np.full(n, 1 / n))
        i = np.repeat(np.arange(n), w)
        assert weighted_cindex(comp, score, w)[0] == pytest.approx(
            concordance_index_censored(e[i], t[i], r[i])[0], abs=1e-12)


def _synthetic(n, rng, noise_a, noise_b, folds=5):
    risk = rng.normal(size=n)
    time = np.exp(-risk + 0.5 * rng.normal(size=n))
    event = (rng.random(n) < 0.7).astype(int)
    base = pd.DataFrame({"fold": np.arange(n) % folds, "case_id": [f"p{i}" for i in range(n)],
                         "time": time, "event": event})
    a = base.assign(risk=risk + noise_a * rng.normal(size=n))
    b = base.assign(risk=risk + noise_b * rng.normal(size=n))
    return a, b


def test_bootstrap_interval_contains_the_true_difference():
    rng = np.random.default_rng(7)
    big_a, big_b = _synthetic(20000, rng, 0.5, 1.5)
    ev = big_a["event"].astype(bool)
    true = (concordance_index_censored(ev, big_a["time"], big_a["risk"])[0]
            - concordance_index_censored(ev, big_b["time"], big_b["risk"])[0])
    a, b = _synthetic(400, rng, 0.5, 1.5)
    res = paired_difference(a, b, n_boot=1000, seed=1)
    assert res["n_patients"] == 400 and res["n_boot"] == 1000
    assert res["ci_low"] < true < res["ci_high"], (res, true)
    assert res["ci_low"] < res["diff"] < res["ci_high"]
    # seeded: the same interval again
    assert paired_difference(a, b, n_boot=1000, seed=1) == res


def test_oracle_against_noise_excludes_zero_and_a_model_against_itself_does_not():
    rng = np.random.default_rng(11)
    oracle, noise = _synthetic(300, rng, 0.0, 0.0)
    noise = noise.assign(risk=rng.normal(size=len(noise)))
    res = paired_difference(oracle, noise, n_boot=500)
    assert res["diff"] > 0.1 and res["ci_low"] > 0 and not res["includes_zero"]
    same = paired_difference(oracle, oracle, n_boot=200)
    assert same["diff"] == 0 and same["includes_zero"]


def test_pairs_are_cmta_against_each_run_or_every_pair():
    assert run_pairs(["snn", "cmta", "coxnet"]) == [("cmta", "snn"), ("cmta", "coxnet")]
    assert run_pairs(["snn", "coxnet", "attmil"]) == [("snn", "coxnet"), ("snn", "attmil"), ("coxnet", "attmil")]
    rng = np.random.default_rng(0)
    a, b = _synthetic(100, rng, 0.5, 1.0)
    table = paired_table("blca", {"snn": a, "coxnet": b}, n_boot=100)
    assert list(table.columns) == ["cohort", "run_a", "encoder_a", "run_b", "encoder_b", "n_patients", "diff",
                                   "ci_low", "ci_high", "n_boot", "includes_zero"]
    assert table.iloc[0][["cohort", "run_a", "run_b"]].tolist() == ["blca", "snn", "coxnet"]


# ---- table 1 ------------------------------------------------------------------------


def _train_dir(root: Path, run: str, folds: int = 3, optimistic: bool = False, recipe: str | None = None,
               seed: int = 0) -> None:
    summary = {"optimistic": optimistic, "selection": "best_heldout" if optimistic else "final"}
    if recipe:
        summary["recipe"] = recipe
    fake_run(root, run, folds, 40, seed, summary)


def test_sd_ddof_follows_the_protocol(tmp_path):
    assert sd_ddof("paper") == 0 and sd_ddof("honest") == 1
    _train_dir(tmp_path / "blca", "snn")
    _train_dir(tmp_path / "blca", "coxnet", recipe="coxnet", seed=1)
    per_fold = []
    for k in range(3):
        p = pd.read_csv(tmp_path / "blca" / "train" / "snn" / f"fold_{k}" / "predictions.tsv", sep="\t")
        per_fold.append(concordance_index_censored(p["event"].astype(bool), p["time"], p["risk"])[0])
    for protocol, ddof in (("honest", 1), ("paper", 0)):
        long, pairs = build_table1([("blca", tmp_path / "blca")], protocol, n_boot=100)
        row = long[(long.run == "snn") & (long.metric == "cindex_harrell")].iloc[0]
        assert row["mean"] == pytest.approx(np.mean(per_fold))
        assert row["sd"] == pytest.approx(np.std(per_fold, ddof=ddof)) and row["sd_ddof"] == ddof
        assert row["n_folds"] == 3 and row["recipe"] == "cmta" and row["protocol"] == protocol
    assert set(long["recipe"]) == {"cmta", "coxnet"}
    assert len(pairs) == 1


def test_table1_files_paper_numbers_and_optimistic_labels(tmp_path):
    _train_dir(tmp_path / "blca", "cmta", optimistic=True)
    _train_dir(tmp_path / "blca", "coxnet", recipe="coxnet", seed=2)
    _train_dir(tmp_path / "luad", "cmta", optimistic=True, seed=3)
    out = tmp_path / "out"
    assert main(["table1", f"blca={tmp_path / 'blca'}", f"x={tmp_path / 'luad'}", "--study", "x=luad",
                 "--protocol", "paper", "--n-boot", "200", "-o", str(out)]) == 0
    md = (out / "table1.md").read_text()
    assert "ddof 0" in md and "OPTIMISTIC" in md and "cmta [optimistic]" in md
    assert "CMTA (paper) | 0.6910 ± 0.0426 | 0.6864 ± 0.0359 |" in md  # luad under the name x
    assert "SNN (paper)" not in md  # only the models this run trained
    long = pd.read_csv(out / "table1.tsv", sep="\t")
    assert list(long.columns) == ["cohort", "run", "encoder", "recipe", "protocol", "optimistic", "metric", "mean",
                                  "sd", "sd_ddof", "n_folds", "split_by", "ci_low", "ci_high", "n_patients",
                                  "logrank_p", "imputed_patients"]
    assert set(zip(long.cohort, long.run)) == {("blca", "cmta"), ("blca", "coxnet"), ("x", "cmta")}
    pairs = pd.read_csv(out / "table1_paired.tsv", sep="\t")
    assert pairs[["cohort", "run_a", "run_b"]].values.tolist() == [["blca", "cmta", "coxnet"]]
    assert (out / "table1.png").stat().st_size > 1000
    # honest: ddof 1, no paper rows
    long, _ = write_table1([("blca", tmp_path / "blca")], tmp_path / "honest", "honest", n_boot=100)
    md = (tmp_path / "honest" / "table1.md").read_text()
    assert "ddof 1" in md and "(paper)" not in md
    # a cohort without runs is named
    assert main(["table1", f"e={tmp_path / 'none'}", "-o", str(tmp_path / "e")]) == 2


def test_coxnet_on_too_few_training_rows_for_inner_folds_takes_the_null_model():
    """Two to five training rows (a tiny test cohort): no inner fold can be fitted, so the
    largest penalty (no gene) is taken rather than failing; on enough rows the same call
    chooses a smaller penalty (the control)."""
    from sksurv.util import Surv

    from cmta_pipeline.training.coxnet import fit_coxnet

    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        X = rng.normal(size=(n, 20))
        y = Surv.from_arrays(np.arange(n) % 2 == 0, np.arange(1.0, n + 1))
        model, alpha, alphas, _ = fit_coxnet(X, y, CoxnetSettings())
        assert alpha == alphas[0] and not np.any(model.coef_[:, 0])
    X = rng.normal(size=(120, 20))
    time_ = np.exp(-2 * X[:, 0] + rng.normal(scale=0.3, size=120))
    y = Surv.from_arrays(rng.random(120) < 0.7, time_)
    _, alpha, alphas, scores = fit_coxnet(X, y, CoxnetSettings())
    assert alpha < alphas[0] and np.nanmax(scores) > 0.7
