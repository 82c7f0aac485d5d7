"""`cmta predict`: risk for new patients from a trained run, through the stored preprocessing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cmta_pipeline.cli import main
from cmta_pipeline.predict.risk import percentile_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def trained(tcga_dir, tmp_path_factory):
    """Real BLCA genomics, published splits, an snn trained 1 epoch on folds 0 and 1, and
    6 held-out patients of fold 0 given again as "new" patients without survival columns."""
    root = tmp_path_factory.mktemp("predict")
    fam = str(tcga_dir / "signatures.csv")
    table = tcga_dir / "tcga_blca_all_clean.csv.gz"
    assert main(["genomics", str(table), "--families", fam, "-o", str(root / "genomics")]) == 0
    assert main(["cohort", str(root / "genomics"), "-o", str(root / "cohort"),
                 "--splits", str(tcga_dir / "splits/5foldcv/tcga_blca")]) == 0
    for k in (0, 1):
        assert main(["train", "--cohort", str(root / "cohort"), "--fold", str(k), "--model", "snn",
                     "-o", str(root / "run" / f"fold_{k}"), "--epochs", "1", "--threads", "1"]) == 0
    patients = pd.read_csv(root / "cohort/folds/fold_0/patients.tsv", sep="\t")
    new_cases = patients.loc[patients["split"] == "heldout", "case_id"].tolist()[:6]
    raw = pd.read_csv(table, low_memory=False)
    new = raw[raw["case_id"].isin(new_cases)].drop(columns=["survival_months", "censorship"])
    new.to_csv(root / "new.csv", index=False)
    assert main(["genomics", str(root / "new.csv"), "--families", fam, "-o", str(root / "new_genomics"),
                 "--missing-survival", "keep"]) == 0
    return root, new_cases


def _predict(root, out, *extra, genomics="new_genomics"):
    return main(["predict", "--run-dir", str(root / "run"), "--cohort", str(root / "cohort"),
                 "--genomics", str(root / genomics), "-o", str(out), *extra])


@pytest.mark.slow
def test_new_patients_reproduce_the_out_of_fold_risks(trained, tmp_path):
    root, cases = trained
    surv = pd.read_csv(root / "new_genomics" / "patients.tsv", sep="\t")
    assert surv["survival_months"].isna().all()  # no follow-up for the new patients
    out = tmp_path / "risk.tsv"
    assert _predict(root, out) == 0
    df = pd.read_csv(out, sep="\t").set_index("case_id")
    assert sorted(df.index) == sorted(cases)
    assert ["risk", "risk_percentile", "risk_group", "survival_1", "survival_4", "n_folds",
            "risk_fold_0", "risk_fold_1"] == [c for c in df.columns if c in {
                "risk", "risk_percentile", "risk_group", "survival_1", "survival_4", "n_folds",
                "risk_fold_0", "risk_fold_1"}]
    # fold 0's model on its own held-out patients, prepared from raw values with the stored
    # statistics, gives the risks `cmta train` wrote for them
    oof = pd.read_csv(root / "run/fold_0/predictions.tsv", sep="\t").set_index("case_id")
    np.testing.assert_allclose(df["risk_fold_0"], oof.loc[df.index, "risk"], atol=1e-5)
    np.testing.assert_allclose(df["risk"], df[["risk_fold_0", "risk_fold_1"]].mean(axis=1), atol=1e-5)
    assert (df["n_folds"] == 2).all()
    assert df["risk_percentile"].between(0, 100).all()
    assert set(df["risk_group"]) <= {"high", "low"}
    assert ((df["risk_group"] == "high") == (df["risk_percentile"] > 50)).all()
    s = df[[f"survival_{j}" for j in range(1, 5)]].to_numpy()
    assert np.all(np.diff(s, axis=1) <= 1e-6) and np.all((s >= 0) & (s <= 1))
    # the percentile of a fold-0 patient is its place among fold 0's out-of-fold risks
    ref = oof["risk"].to_numpy()
    c = cases[0]
    assert df.loc[c, "risk_percentile_fold_0"] == pytest.approx(
        100 * ((ref < oof.loc[c, "risk"]).sum() + 0.5 * (ref == oof.loc[c, "risk"]).sum()) / len(ref),
        abs=1e-3)


def test_missing_gene_and_missing_run_are_one_line_errors(trained, tmp_path, capsys, tcga_dir):
    root, _ = trained
    new = pd.read_csv(root / "new.csv", low_memory=False)
    new.drop(columns=["TP53_rnaseq"]).to_csv(tmp_path / "no_tp53.csv", index=False)
    assert main(["genomics", str(tmp_path / "no_tp53.csv"), "--families", str(tcga_dir / "signatures.csv"),
                 "-o", str(tmp_path / "g"), "--missing-survival", "keep"]) == 0
    capsys.readouterr()
    rc = main(["predict", "--run-dir", str(root / "run"), "--cohort", str(root / "cohort"),
               "--genomics", str(tmp_path / "g"), "-o", str(tmp_path / "x.tsv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "TP53_rnaseq" in err and "\n" not in err and "--impute-missing-genes" in err
    assert not (tmp_path / "x.tsv").exists()
    # the documented option imputes it with each fold's training median
    rc = main(["predict", "--run-dir", str(root / "run"), "--cohort", str(root / "cohort"),
               "--genomics", str(tmp_path / "g"), "-o", str(tmp_path / "x.tsv"), "--impute-missing-genes"])
    assert rc == 0 and len(pd.read_csv(tmp_path / "x.tsv", sep="\t")) == 6

    capsys.readouterr()
    rc = main(["predict", "--run-dir", str(root / "no_such_run"), "--cohort", str(root / "cohort"),
               "--genomics", str(root / "new_genomics"), "-o", str(tmp_path / "y.tsv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no_such_run" in err and "\n" not in err


def test_checkpoint_and_cohort_mismatch_names_fold_and_family(trained, tmp_path, capsys):
    root, _ = trained
    ckpt = torch.load(root / "run/fold_1/model.pt", weights_only=True)
    ckpt["model"]["omic_sizes"][2] += 1
    bad_run = tmp_path / "run" / "fold_1"
    bad_run.mkdir(parents=True)
    # a model of the wrong width, so load_checkpoint succeeds and the check must catch it
    from cmta_pipeline.models import build_model

    m = build_model("snn", ckpt["model"]["omic_sizes"])
    ckpt["state_dict"] = m.state_dict()
    torch.save(ckpt, bad_run / "model.pt")
    (bad_run / "predictions.tsv").write_text((root / "run/fold_1/predictions.tsv").read_text())
    capsys.readouterr()
    rc = main(["predict", "--run-dir", str(tmp_path / "run"), "--cohort", str(root / "cohort"),
               "--genomics", str(root / "new_genomics"), "-o", str(tmp_path / "z.tsv")])
    err = capsys.readouterr().err.strip()
    import json

    family = json.loads((root / "cohort/folds.json").read_text())["family_names"][2]
    assert rc == 2 and "fold 1" in err and f"family {family!r}" in err and "\n" not in err


def test_percentile_is_mid_rank():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(percentile_of([0.0, 2.0, 2.5, 9.0], ref), [0.0, 37.5, 50.0, 100.0])


def test_cohort_audits_patients_kept_without_survival(tmp_path):
    """`cmta genomics --missing-survival keep` keeps patients without follow-up; the cohort
    stage lists them as 'no survival' instead of failing."""
    rng = np.random.default_rng(0)
    n = 30
    df = pd.DataFrame({
        "case_id": [f"TCGA-AA-{i:04d}" for i in range(n)],
        "survival_months": rng.uniform(1, 100, n).round(2),
        "censorship": (np.arange(n) % 3 == 0).astype(int),
        "G1_rnaseq": rng.normal(size=n), "G2_rnaseq": rng.normal(size=n), "G3_cnv": rng.integers(-1, 2, n),
    })
    df.loc[[3, 7], ["survival_months", "censorship"]] = np.nan
    df.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "fam.csv").write_text("A,B\nG1,G3\nG2,\n")
    assert main(["genomics", str(tmp_path / "t.csv"), "--families", str(tmp_path / "fam.csv"),
                 "-o", str(tmp_path / "g"), "--missing-survival", "keep"]) == 0
    pats = pd.read_csv(tmp_path / "g/patients.tsv", sep="\t")
    assert len(pats) == n and pats["survival_months"].isna().sum() == 2
    assert main(["cohort", str(tmp_path / "g"), "-o", str(tmp_path / "c"), "--n-folds", "3"]) == 0
    audit = pd.read_csv(tmp_path / "c/audit.tsv", sep="\t").set_index("case_id")
    assert audit.loc["TCGA-AA-0003", "reason"] == "no survival"
    assert len(pd.read_csv(tmp_path / "c/cohort.tsv", sep="\t")) == n - 2


@pytest.mark.slow
def test_slide_model_reads_the_new_patients_bags(trained, tmp_path):
    """CMTA (slides + genomics) on synthetic patch features: the held-out patients of fold 0
    predicted again from their slide sheet and feature files get the same risks."""
    import h5py

    root, _ = trained
    cases = pd.read_csv(root / "genomics" / "patients.tsv", sep="\t")["case_id"][:30]
    rng = np.random.default_rng(0)
    feats = tmp_path / "features"
    feats.mkdir()
    rows = []
    for i, c in enumerate(cases):
        for j in range(1 + i % 2):
            sid = f"{c}-S{j}"
            rows.append({"slide_id": sid, "case_id": c})
            with h5py.File(feats / f"{sid}.features.h5", "w") as f:
                f["features"] = rng.standard_normal((int(rng.integers(5, 20)), 16)).astype("float32")
    pd.DataFrame(rows).to_csv(tmp_path / "slides.tsv", sep="\t", index=False)
    assert main(["cohort", str(root / "genomics"), "-o", str(tmp_path / "cohort"),
                 "--slides", str(tmp_path / "slides.tsv"), "--n-folds", "3"]) == 0
    assert main(["train", "--cohort", str(tmp_path / "cohort"), "--fold", "0", "--model", "cmta",
                 "--features-dir", str(feats), "-o", str(tmp_path / "run" / "fold_0"),
                 "--epochs", "1", "--threads", "1"]) == 0
    oof = pd.read_csv(tmp_path / "run/fold_0/predictions.tsv", sep="\t").set_index("case_id")
    base = ["predict", "--run-dir", str(tmp_path / "run"), "--cohort", str(tmp_path / "cohort"),
            "--genomics", str(root / "genomics"), "--cases", ",".join(oof.index)]
    assert main(base + ["-o", str(tmp_path / "x.tsv")]) == 2  # slides are needed
    assert main(base + ["--slides", str(tmp_path / "slides.tsv"), "--features-dir", str(feats),
                        "-o", str(tmp_path / "risk.tsv")]) == 0
    df = pd.read_csv(tmp_path / "risk.tsv", sep="\t").set_index("case_id")
    np.testing.assert_allclose(df["risk_fold_0"], oof.loc[df.index, "risk"], atol=1e-5)


def test_workflow_plans_prediction_when_configured(tmp_path, tcga_dir):
    import re
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    cfg = {
        "outdir": str(tmp_path / "results"),
        "slides": {"sheet": "config/slides.tsv"},
        "genomics": {"table": str(tcga_dir / "tcga_blca_all_clean.csv.gz"),
                     "families": str(tcga_dir / "signatures.csv")},
        "training": {"models": ["snn"], "folds": [0, 1]},
        "predict": {"genomics": str(tcga_dir / "tcga_blca_all_clean.csv.gz")},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "workflow/Snakefile"), "-n",
                        "--configfile", str(tmp_path / "config.yaml")],
                       cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M))
    assert jobs.get("predict_genomics") == "1" and jobs.get("predict") == "1"
