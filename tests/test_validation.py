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


@pytest.fixture(scope="session")
def blca_gdir(tcga_dir, tmp_path_factory):
    from cmta_pipeline import genomics as g

    out = tmp_path_factory.mktemp("blca_sites") / "genomics"
    g.write_genomics(g.load_wide_table(tcga_dir / "tcga_blca_all_clean.csv.gz"),
                     g.read_families(tcga_dir / "signatures.csv"), out)
    return out


def _heldout_sites(cohort_dir):
    import json

    folds = json.loads((cohort_dir / "folds.json").read_text())["n_folds"]
    cohort = pd.read_csv(cohort_dir / "cohort.tsv", sep="\t", dtype=str).set_index("case_id")
    out = []
    for k in range(folds):
        p = pd.read_csv(cohort_dir / "folds" / f"fold_{k}" / "patients.tsv", sep="\t", dtype=str)
        out.append(set(p.loc[p["split"] == "heldout", "case_id"].str[5:7]))
        assert (cohort.loc[p["case_id"], "site"].to_numpy() == p["case_id"].str[5:7].to_numpy()).all()
    return out


def test_site_preserved_folds_hold_each_blca_site_out_whole(blca_gdir, tmp_path):
    from cmta_pipeline.cli import main
    from cmta_pipeline.cohort import build_cohort

    assert main(["cohort", str(blca_gdir), "-o", str(tmp_path / "s"), "--split-by", "site", "--seed", "3"]) == 0
    sites = _heldout_sites(tmp_path / "s")
    assert len(sites) == 5 and all(sites)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not sites[i] & sites[j], f"site in held-out folds {i} and {j}"
    sizes = [len(pd.read_csv(tmp_path / "s" / "folds" / f"fold_{k}" / "patients.tsv", sep="\t")
                 .query("split == 'heldout'")) for k in range(5)]
    assert max(sizes) - min(sizes) < 40  # 373 patients, largest site 49: near-equal folds
    # negative control: random folds put most sites in several held-out folds
    build_cohort(blca_gdir, tmp_path / "p", n_folds=5, seed=3)
    cohort = pd.read_csv(tmp_path / "p" / "cohort.tsv", sep="\t", dtype=str)
    assert "site" not in cohort.columns
    rnd = [set(pd.read_csv(tmp_path / "p" / "folds" / f"fold_{k}" / "patients.tsv", sep="\t", dtype=str)
               .query("split == 'heldout'")["case_id"].str[5:7]) for k in range(5)]
    assert sum(len(rnd[i] & rnd[j]) for i in range(5) for j in range(i + 1, 5)) > 10


def test_site_folds_refused_with_too_few_sites_and_seeded():
    from cmta_pipeline.cohort.folds import site_folds, site_labels
    from cmta_pipeline.errors import CMTAError

    ids = [f"TCGA-{s}-{i:04d}" for i, s in enumerate(["AA", "BB", "CC"] * 10)]
    sites = site_labels(ids)
    with pytest.raises(CMTAError, match="3 site.*cannot make 5 folds"):
        site_folds(sites, np.zeros(30), 5, 1)
    rng = np.random.default_rng(0)
    ids = [f"TCGA-{a}{b}-{i:04d}" for i, (a, b) in enumerate(rng.choice(list("ABCDEFGH"), (200, 2)))]
    strata = rng.integers(0, 8, 200)
    f1 = site_folds(site_labels(ids), strata, 5, 1)
    assert (f1 == site_folds(site_labels(ids), strata, 5, 1)).all()
    assert (f1 != site_folds(site_labels(ids), strata, 5, 2)).any()
    with pytest.raises(CMTAError, match="patient P1 has no site"):
        site_labels(["P1"])
    assert list(site_labels(["P1"], {"P1": "north"})) == ["north"]


def test_reference_recipe_is_fp32_last_epoch_and_porpoise_l1_on_its_modules():
    import torch

    from cmta_pipeline.models import build_model
    from cmta_pipeline.training import TrainSettings
    from cmta_pipeline.training.losses import l1_penalty
    from cmta_pipeline.training.recipes import apply_recipe

    paper = TrainSettings(selection="best_heldout", amp=True)  # what protocol: paper sets for cmta
    for model in ("snn", "attmil", "mcat", "mcat_omic", "porpoise"):
        ref, used = apply_recipe(model, "reference", paper)
        assert used == "reference" and ref.amp is False and ref.selection == "final", model
    assert apply_recipe("cmta", "reference", paper)[0] == paper  # CMTA's run.sh: unchanged
    por = apply_recipe("porpoise", "reference", paper)[0]
    assert por.l1 == pytest.approx(1e-5 * 32) and por.l1_modules == ("genomic_embedding", "fusion")
    assert apply_recipe("snn", "reference", paper)[0].l1_modules == ()  # every weight
    net = build_model("porpoise", [5, 6, 7, 8, 9, 10], path_dim=16)
    part = sum(p.abs().sum() for m in (net.genomic_embedding, net.fusion) for p in m.parameters())
    assert torch.allclose(l1_penalty(net, por.l1_modules), part)
    assert l1_penalty(net) > part * 1.01  # every weight: more than those modules


@pytest.fixture(scope="session")
def blca_by_site(tcga_dir, tmp_path_factory):
    """Two cohorts built from BLCA by site: A the sites of 2F..FD (alphabetically first half
    of the patients), B the others; genomics only, with every third gene column dropped
    from B (genes the models read that B lacks)."""
    from cmta_pipeline.cli import main

    root = tmp_path_factory.mktemp("blca_by_site")
    table = pd.read_csv(tcga_dir / "tcga_blca_all_clean.csv.gz", index_col=0, low_memory=False)
    sites = table["case_id"].str[5:7]
    order = sorted(sites.unique())
    cut = order[len(order) // 2]
    genes = [c for c in table.columns if c.endswith(("_rnaseq", "_cnv"))]
    parts = {"A": table[sites < cut], "B": table[sites >= cut].drop(columns=genes[::3][:5])}
    for name, part in parts.items():
        part.to_csv(root / f"{name}.csv")
        assert main(["genomics", str(root / f"{name}.csv"), "--families", str(tcga_dir / "signatures.csv"),
                     "-o", str(root / name / "genomics")]) == 0
        assert main(["cohort", str(root / name / "genomics"), "-o", str(root / name / "cohort"),
                     "--n-folds", "3", "--split-by", "site"]) == 0
    return root


@pytest.mark.slow
def test_external_rows_with_intervals_in_table1(blca_by_site, tmp_path):
    import json

    from cmta_pipeline.cli import main

    root = blca_by_site
    for k in range(3):
        assert main(["train", "--cohort", str(root / "A" / "cohort"), "--fold", str(k), "--model", "snn",
                     "-o", str(root / "A" / "train" / "snn" / f"fold_{k}"), "--epochs", "2",
                     "--threads", "1"]) == 0
    ext = tmp_path / "external" / "A_to_B" / "snn"
    assert main(["external", "--run-dir", str(root / "A" / "train" / "snn"), "--cohort", str(root / "A" / "cohort"),
                 "--test-cohort", str(root / "B" / "cohort"), "--genomics", str(root / "B" / "genomics"),
                 "--train-name", "A", "--test-name", "B", "--n-boot", "200", "-o", str(ext)]) == 0
    s = json.loads((ext / "external.json").read_text())
    n_b = len(pd.read_csv(root / "B" / "cohort" / "cohort.tsv", sep="\t"))
    assert s["n_patients"] == n_b and s["n_folds"] == 3
    assert s["patients_with_imputed_genes"] == n_b  # five genes absent from B: every patient
    assert s["ci_low"] < s["cindex_harrell"] < s["ci_high"]
    risk = pd.read_csv(ext / "risk.tsv", sep="\t")
    assert (risk["genes_imputed"] == 5).all() and (ext / "km.png").is_file()
    out = tmp_path / "table1"
    assert main(["table1", f"A={root / 'A'}", "-o", str(out), "--external-dir", str(tmp_path / "external"),
                 "--n-boot", "50"]) == 0
    t = pd.read_csv(out / "table1.tsv", sep="\t")
    ext_rows = t[t["protocol"] == "external"]
    assert list(ext_rows["cohort"]) == ["A->B"] and list(ext_rows["run"]) == ["snn"]
    assert ext_rows["ci_low"].iloc[0] == pytest.approx(s["ci_low"], abs=1e-5)
    assert (t.loc[t["protocol"] == "honest", "split_by"] == "site").all()
    assert t.loc[t["protocol"] == "honest", "ci_low"].isna().all()
    assert "A->B" in (out / "table1.md").read_text()


def test_bootstrap_interval_narrows_with_patients_and_covers_the_estimate():
    from cmta_pipeline.report.external import bootstrap_cindex

    rng = np.random.default_rng(0)
    widths = []
    for n in (60, 600):
        time = rng.exponential(10, n)
        risk = -time + rng.normal(0, 10, n)
        c, lo, hi = bootstrap_cindex(time, np.ones(n), risk, 300, 1)
        assert lo < c < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] * 0.6
    assert np.isnan(bootstrap_cindex(time, np.ones(n), risk, 0, 1)[1])


def test_paper_table_reads_back_the_published_cells_and_leaves_unknown_ones_empty(tmp_path):
    from cmta_pipeline.report.table1 import paper_rows, read_paper_table

    paper = read_paper_table()
    methods = ["SNN", "SNNTrans", "MaxMIL", "MeanMIL", "AttMIL", "CLAM-SB", "CLAM-MB", "TransMIL", "MCAT",
               "M3IF", "GPDBN", "Porpoise", "HFBSurv", "DualTrans", "CMTA"]
    main = paper[~paper["model"].str.contains("w/o")]
    assert list(dict.fromkeys(main["model"])) == methods
    assert (main.groupby("model")["study"].apply(sorted) == [["blca", "brca", "gbmlgg", "luad", "ucec"]] * 15).all()
    cell = paper.set_index(["model", "study"])
    assert cell.loc[("CMTA", "blca"), "mean"] == pytest.approx(0.6910)
    assert cell.loc[("CMTA", "gbmlgg"), "sd"] == pytest.approx(0.0116)
    assert cell.loc[("CMTA", "ucec"), "mean"] == pytest.approx(0.6975)
    assert cell.loc[("SNN", "luad"), "mean"] == pytest.approx(0.6171)
    assert cell.loc[("SNN", "brca"), "sd"] == pytest.approx(0.0739)
    assert np.isnan(cell.loc[("MCAT", "blca"), "mean"])  # not found: empty, never invented
    rows = paper_rows(["b", "u"], {"b": "blca", "u": "ucec"}, paper, runs=["snn", "mcat", "coxnet"])
    assert list(rows.index) == ["SNN (paper)", "MCAT (paper)"]  # the trained models only
    assert rows.loc["SNN (paper)", "b"] == "0.6339 ± 0.0509" and rows.loc["MCAT (paper)", "u"] == ""


def test_workflow_plans_external_pairs_site_folds_and_reports_the_floor(tcga_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "slides.tsv").write_text("slide_id\tcase_id\tpath\n")
    table = str(tcga_dir / "tcga_blca_all_clean.csv.gz")
    config = {"outdir": "results", "gpu": False, "slides": {"sheet": "config/slides.tsv"},
              "genomics": {"families": str(tcga_dir / "signatures.csv")},
              "training": {"models": ["snn"], "epochs": 1},
              "cohorts": {"a": {"genomics": {"table": table}, "cohort": {"split_by": "site"}},
                          "b": {"genomics": {"table": table}}},
              "external": [{"train": "a", "test": "b"}]}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))

    def plan(cfg):
        (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
        return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "workflow" / "Snakefile"),
                               "-n", "-p", "--directory", str(tmp_path)], capture_output=True, text=True,
                              timeout=300)

    r = plan(config)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "external --run-dir results/a/train/snn" in out and "--test-cohort results/b/cohort" in out
    assert "external --run-dir results/a/train/coxnet" not in out  # the linear floor keeps no network
    assert "--external-dir results/external" in out
    assert out.count("--split-by site") == 1  # cohort a only
    assert "report results/a/train --runs snn coxnet" in out  # the floor reported like any run


def test_split_difference_pairs_one_run_under_two_fold_schemes():
    from cmta_pipeline.report.paired import split_difference, split_pairs

    rng = np.random.default_rng(3)
    n = 300
    time = rng.exponential(20, n)
    event = rng.integers(0, 2, n)
    base = pd.DataFrame({"case_id": [f"P{i}" for i in range(n)], "time": time, "event": event})
    good = -time + rng.normal(0, 3, n)  # concordant
    noise = rng.normal(0, 1, n)
    random_folds = base.assign(fold=rng.integers(0, 5, n))
    site_folds = base.assign(fold=np.arange(n) * 5 // n)
    same = split_difference(random_folds.assign(risk=good), site_folds.assign(risk=good), 300, 1)
    assert abs(same["diff"]) < 0.03 and same["includes_zero"] and same["n_patients"] == n
    worse = split_difference(random_folds.assign(risk=good), site_folds.assign(risk=noise), 300, 1)
    assert worse["diff"] > 0.2 and worse["ci_low"] > 0 and not worse["includes_zero"]
    preds = {"r": {"snn": random_folds.assign(risk=good)}, "s": {"snn": site_folds.assign(risk=noise)},
             "r2": {"snn": random_folds.assign(risk=noise)}, "other": {"snn": random_folds.assign(risk=good).iloc[:100]}}
    table = split_pairs(preds, 100, 1, {"r": "patient", "s": "site", "r2": "patient", "other": "site"})
    assert table[["cohort", "run_a", "run_b"]].values.tolist() == [["r vs s", "snn@r", "snn@s"],
                                                                     ["s vs r2", "snn@s", "snn@r2"]]
