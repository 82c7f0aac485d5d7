"""Out-of-fold evaluation: c-index per fold against scikit-survival, log-rank, KM report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sksurv.compare import compare_survival
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw, cumulative_dynamic_auc
from sksurv.util import Surv

from cmta_pipeline.cli import main
from cmta_pipeline.report.metrics import cindex, logrank, risk_groups


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


def _write_run(root, run, p, optimistic=False, train=None, expected=None, **extra):
    """A trained run's folder as `cmta train` writes it, from pooled predictions ``p``
    (``extra``: more summary.json keys, e.g. protocol, recipe)."""
    edges = [0.0, 10.0, 25.0, 45.0, 300.0]
    for fold, part in p.groupby("fold"):
        d = root / run / f"fold_{fold}"
        d.mkdir(parents=True)
        part.to_csv(d / "predictions.tsv", sep="\t", index=False)
        tr = p[p.fold != fold] if train is None else train[train.fold == fold]
        tr.assign(fold=fold).to_csv(d / "train_predictions.tsv", sep="\t", index=False)
        n = len(part) if expected is None else expected
        (d / "summary.json").write_text(json.dumps({
            "selection": "best_heldout" if optimistic else "final", "optimistic": optimistic,
            "bin_edges": edges, "n_patients": {"train": len(tr), "heldout": n}, **extra}))


def _with_curves(p):
    # a discrete survival curve over 4 bins that falls faster for riskier patients
    h = 1 / (1 + np.exp(-(p["risk"].to_numpy() - p["risk"].mean())[:, None] + [1.0, 1.2, 1.4, 1.6]))
    s = np.cumprod(1 - h, axis=1)
    return p.assign(**{f"survival_{k + 1}": s[:, k] for k in range(4)})


def test_report_command(tmp_path, capsys):
    from cmta_pipeline.report.metrics import METRICS, censoring_tau

    rng = np.random.default_rng(2)
    p = _with_curves(_predictions(rng, n=150, signal=2.0))
    _write_run(tmp_path / "train", "cmta", p)
    _write_run(tmp_path / "train", "snn", p, optimistic=True)
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "train"), "-o", str(out)]) == 0
    summary = pd.read_csv(out / "cindex_summary.tsv", sep="\t").set_index("run")
    per_fold = [cindex(part.risk, part.time, part.event) for _, part in p.groupby("fold")]
    assert summary.loc["cmta", "cindex_mean"] == pytest.approx(np.mean(per_fold), abs=1e-4)
    assert summary.loc["cmta", "cindex_sd"] == pytest.approx(np.std(per_fold, ddof=1), abs=1e-4)
    assert summary.loc["cmta", "logrank_p"] < 0.05  # a strong planted signal separates the groups
    assert summary.loc["snn", "protocol"].startswith("OPTIMISTIC")
    # metrics.tsv: every metric of every fold, in range, equal to scikit-survival's
    m = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert list(m.columns[:4]) == ["run", "fold", "metric", "value"]
    assert set(m["metric"]) == set(METRICS) and len(m) == 2 * 3 * len(METRICS)
    cm = m[m.run == "cmta"].set_index(["fold", "metric"])["value"]
    assert cm.between(0, 1).all()  # 60 months is within this follow-up: nothing skipped
    for fold, part in p.groupby("fold"):
        tr = p[p.fold != fold]
        y_tr = Surv.from_arrays(tr.event.astype(bool), tr.time)
        y_te = Surv.from_arrays(part.event.astype(bool), part.time)
        tau = censoring_tau(tr.time, tr.event)  # last training time with G > 0
        ref_uno = concordance_index_ipcw(y_tr, y_te, part.risk, tau=tau)[0]
        assert cm[(fold, "cindex_uno")] == pytest.approx(ref_uno, abs=1e-4)
        if part.time.max() < tr.time.max():  # no truncation needed: sksurv directly
            ref_auc = cumulative_dynamic_auc(y_tr, y_te, part.risk, [36])[0][0]
            assert cm[(fold, "auc_36m")] == pytest.approx(ref_auc, abs=1e-4)
    assert cm.xs("ibs", level="metric").lt(0.25).all()  # better than a coin-flip curve
    short = pd.read_csv(out / "metrics_summary.tsv", sep="\t")
    assert set(short.columns) >= {"run", "protocol", "metric", "mean", "sd", "folds"}
    for stem in ("km_cmta", "km_snn", "cindex_per_fold"):
        assert (out / f"{stem}.png").stat().st_size > 10_000
        assert "<svg" in (out / f"{stem}.svg").read_text()
    assert "number at risk" in (out / "km_cmta.svg").read_text()
    md = (out / "summary.md").read_text()
    assert "| cmta | honest | 3 of 3 |" in md and "| snn | optimistic | 3 of 3 |" in md
    assert "OPTIMISTIC" in (out / "report.html").read_text()
    assert main(["report", str(tmp_path / "nothing"), "-o", str(out)]) == 2


def test_threshold_is_each_folds_training_median(tmp_path):
    from cmta_pipeline.report.metrics import evaluate_run

    rng = np.random.default_rng(3)
    p = _predictions(rng, n=60)
    train = p.assign(risk=p.risk + 50.0)  # training risks all higher: every held-out patient is "low"
    _write_run(tmp_path, "r", p, train=pd.concat([train.assign(fold=k) for k in range(3)]))
    files = sorted(tmp_path.glob("r/fold_*/predictions.tsv"))
    honest = evaluate_run("r", files)
    assert (honest.predictions["group"] == 0).all()
    assert "high-risk group is empty" in " ".join(honest.notes)
    pooled = evaluate_run("r", files, threshold="pooled_median")
    assert pooled.predictions["group"].sum() == 30 and "OPTIMISTIC" in pooled.threshold


def test_bad_input_renders_what_it_can_and_states_the_gap(tmp_path, capsys):
    rng = np.random.default_rng(4)
    p = _with_curves(_predictions(rng, n=90, signal=2.0))
    p["time"] = np.minimum(p["time"], 50.0)  # follow-up ends before 60 months
    p.loc[(p.fold == 2) & (p.index > 5), "event"] = 0  # fold 2: one event at most
    _write_run(tmp_path / "train", "cmta", p, expected=40)  # 40 expected, 30 predicted per fold
    # a run whose risk groups collapse: every held-out risk below every training risk
    _write_run(tmp_path / "train", "flat", p, train=pd.concat([p.assign(fold=k, risk=p.risk + 99) for k in range(3)]))
    (tmp_path / "train" / "empty" / "fold_0").mkdir(parents=True)  # a run that never finished
    broken = tmp_path / "train" / "flat" / "fold_9"
    broken.mkdir()
    (broken / "predictions.tsv").write_text("case_id\tfold\n")  # a fold that wrote no rows
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "train"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    m = pd.read_csv(out / "metrics.tsv", sep="\t", keep_default_na=False, na_values=["nan", ""])
    fold2 = m[(m.run == "cmta") & (m.fold == 2)]
    assert fold2["value"].isna().all() and fold2["note"].str.contains("held-out event").all()
    auc60 = m[(m.run == "cmta") & (m.metric == "auc_60m") & (m.fold < 2)]
    assert auc60["value"].isna().all() and auc60["note"].str.contains("follow-up").all()
    assert m[(m.run == "cmta") & (m.fold == 0) & (m.metric == "cindex_uno")]["value"].notna().all()
    md = (out / "summary.md").read_text()
    assert "| cmta | honest | 2 of 3 |" in md  # fold 2 has too few events
    for gap in ("10 of 40 held-out patients have no prediction", "held-out event",
                "auc_60m", "the high-risk group is empty", "empty: no fold_*/predictions.tsv",
                "fold_9/predictions.tsv: missing column(s) risk, time, event; fold left out"):
        assert gap in md, gap
    assert "gap:" in printed
    assert (out / "km_flat.png").is_file() and (out / "km_cmta.svg").is_file()
    summary = pd.read_csv(out / "cindex_summary.tsv", sep="\t").set_index("run")
    assert np.isnan(summary.loc["flat", "logrank_p"]) and summary.loc["cmta", "folds"] == 3


def test_compare_builds_table1_without_mixing_protocols(tmp_path, capsys):
    rng = np.random.default_rng(5)
    for cohort in ("blca", "ucec"):
        p = _with_curves(_predictions(rng, n=90, signal=1.5))
        _write_run(tmp_path / cohort / "train", "cmta", p)
        _write_run(tmp_path / cohort / "train", "snn", p.assign(risk=-p.risk), optimistic=cohort == "ucec")
        assert main(["report", str(tmp_path / cohort / "train"), "-o", str(tmp_path / cohort / "report")]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "blca" / "report"), f"UCEC={tmp_path / 'ucec' / 'report'}",
                 "-o", str(out)]) == 0
    t = pd.read_csv(out / "table1_cindex_harrell.tsv", sep="\t", index_col="model", keep_default_na=False)
    assert list(t.columns) == ["blca", "UCEC"]
    assert list(t.index) == ["cmta", "snn", "snn [optimistic]"]
    assert t.loc["snn", "UCEC"] == "" and t.loc["snn [optimistic]", "blca"] == ""  # never in one cell
    blca = pd.read_csv(tmp_path / "blca" / "report" / "metrics_summary.tsv", sep="\t")
    ref = blca[(blca.run == "cmta") & (blca.metric == "cindex_harrell")].iloc[0]
    assert t.loc["cmta", "blca"] == f"{ref['mean']:.3f} ± {ref['sd']:.3f}"
    md = (out / "compare.md").read_text()
    assert "| snn [optimistic] |  |" in md and "Uno's IPCW c-index" in md
    assert (out / "compare_cindex_harrell.png").stat().st_size > 10_000 and (out / "compare_cindex_harrell.svg").is_file()
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "nowhere"), "-o", str(out)]) == 2
    assert "metrics_summary.tsv" in capsys.readouterr().err


@pytest.mark.slow
def test_report_of_a_trained_run_equals_sksurv_on_its_files(tcga_dir, tmp_path):
    """Real BLCA genomics, published splits: SNN trained 2 epochs on two folds, reported."""
    from sksurv.metrics import integrated_brier_score

    from cmta_pipeline.report.metrics import METRICS, brier_times, censoring_tau, survival_at

    g, c = tmp_path / "genomics", tmp_path / "cohort"
    assert main(["genomics", str(tcga_dir / "tcga_blca_all_clean.csv.gz"), "--families",
                 str(tcga_dir / "signatures.csv"), "-o", str(g)]) == 0
    assert main(["cohort", str(g), "-o", str(c), "--splits", str(tcga_dir / "splits/5foldcv/tcga_blca")]) == 0
    for k in (0, 1):
        assert main(["train", "--cohort", str(c), "--fold", str(k), "--model", "snn", "-o",
                     str(tmp_path / "train" / "snn" / f"fold_{k}"), "--epochs", "2", "--threads", "1"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "train"), "-o", str(out)]) == 0
    m = pd.read_csv(out / "metrics.tsv", sep="\t").set_index(["fold", "metric"])["value"]
    assert set(m.index.get_level_values("metric")) == set(METRICS)
    for k in (0, 1):
        d = tmp_path / "train" / "snn" / f"fold_{k}"
        te = pd.read_csv(d / "predictions.tsv", sep="\t")
        tr = pd.read_csv(d / "train_predictions.tsv", sep="\t")
        summary = json.loads((d / "summary.json").read_text())
        edges = summary["bin_edges"]
        assert (len(tr), len(te)) == (summary["n_patients"]["train"], summary["n_patients"]["heldout"])
        y_tr = Surv.from_arrays(tr.event.astype(bool), tr.time)
        y_te = Surv.from_arrays(te.event.astype(bool), te.time)
        tau = censoring_tau(tr.time, tr.event)
        assert m[(k, "cindex_harrell")] == pytest.approx(cindex(te.risk, te.time, te.event), abs=1e-4)
        assert m[(k, "cindex_uno")] == pytest.approx(concordance_index_ipcw(y_tr, y_te, te.risk, tau=tau)[0], abs=1e-4)
        for months in (12, 36):
            if te.time.max() < tr.time.max():
                ref = cumulative_dynamic_auc(y_tr, y_te, te.risk, [months])[0][0]
                assert m[(k, f"auc_{months}m")] == pytest.approx(ref, abs=1e-4)
        grid = brier_times(te.time, tau)
        surv = survival_at(te[[f"survival_{j}" for j in range(1, 5)]].to_numpy(), edges, grid)
        if te.time.max() < tr.time.max():
            assert m[(k, "ibs")] == pytest.approx(integrated_brier_score(y_tr, y_te, surv, grid), abs=1e-4)
        values = m.xs(k, level="fold").dropna()
        assert values.between(0, 1).all() and {"cindex_harrell", "cindex_uno", "ibs"} <= set(values.index)
    assert (out / "km_snn.svg").is_file() and "number at risk" in (out / "km_snn.svg").read_text()


def test_sd_is_the_papers_np_std_for_protocol_paper_and_stated(tmp_path):
    """protocol paper runs: sd with ddof 0 (the paper's np.std), honest runs ddof 1; each
    summary says which, with the recipe; labels_from all alone is OPTIMISTIC."""
    rng = np.random.default_rng(5)
    p = _with_curves(_predictions(rng, n=150, signal=2.0))
    reason = "survival bins cut on the whole cohort, held-out times included (cohort.labels_from: all)"
    _write_run(tmp_path / "train", "cmta", p, optimistic=True, protocol="paper",
               optimistic_reasons=[reason], recipe="cmta")
    _write_run(tmp_path / "train", "mcat", p, recipe="reference")
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "train"), "-o", str(out)]) == 0
    per_fold = [cindex(part.risk, part.time, part.event) for _, part in p.groupby("fold")]
    summary = pd.read_csv(out / "cindex_summary.tsv", sep="\t").set_index("run")
    assert summary.loc["cmta", "cindex_sd"] == pytest.approx(np.std(per_fold), abs=1e-4)
    assert summary.loc["mcat", "cindex_sd"] == pytest.approx(np.std(per_fold, ddof=1), abs=1e-4)
    assert summary.loc["mcat", "cindex_sd"] / summary.loc["cmta", "cindex_sd"] == pytest.approx(1.5 ** 0.5, rel=1e-2)
    assert "labels_from: all" in summary.loc["cmta", "protocol"]
    assert summary.loc["cmta", "protocol"].startswith("OPTIMISTIC")
    short = pd.read_csv(out / "metrics_summary.tsv", sep="\t").groupby("run").first()
    assert short.loc["cmta", "sd_ddof"] == 0 and short.loc["mcat", "sd_ddof"] == 1
    assert short.loc["mcat", "recipe"] == "reference" and short.loc["cmta", "protocol"] == "optimistic"
    for page in ("summary.md", "report.html"):
        text = (out / page).read_text()
        assert "ddof 0 (np.std" in text and "ddof 1 (sample sd) for mcat" in text
        assert "mcat reference" in text and "labels_from: all" in text
