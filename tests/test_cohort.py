"""Cohort stage: assembly and audit, labels, folds, per-fold preprocessing, load_fold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmta_pipeline import genomics as g
from cmta_pipeline.cli import main
from cmta_pipeline.cohort import (
    assign_labels,
    build_cohort,
    fit_bin_edges,
    load_fold,
    read_split_files,
)
from cmta_pipeline.errors import CMTAError


@pytest.fixture(scope="session")
def blca_gdir(tcga_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("blca_cohort") / "genomics"
    data = g.load_wide_table(tcga_dir / "tcga_blca_all_clean.csv.gz")
    g.write_genomics(data, g.read_families(tcga_dir / "signatures.csv"), out)
    return out


@pytest.fixture(scope="session")
def blca_splits(tcga_dir) -> Path:
    return tcga_dir / "splits" / "5foldcv" / "tcga_blca"


@pytest.fixture(scope="session")
def blca_cohort(blca_gdir, blca_splits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("blca_cohort_out") / "cohort"
    rc = main(["cohort", str(blca_gdir), "-o", str(out), "--splits", str(blca_splits)])
    assert rc == 0
    return out


def test_blca_published_splits(blca_cohort, blca_splits):
    cohort = pd.read_csv(blca_cohort / "cohort.tsv", sep="\t", keep_default_na=False)
    assert list(cohort.columns) == ["case_id", "survival_months", "censorship", "event", "slide_ids"]
    assert len(cohort) == 373
    assert (cohort["event"] == 1 - cohort["censorship"]).all()
    assert (cohort["slide_ids"] == "").all()  # genomics-only cohort
    summary = json.loads((blca_cohort / "folds.json").read_text())
    assert summary["n_folds"] == 5 and summary["n_bins"] == 4
    assert summary["raw_omic_sizes"] == [94, 334, 521, 468, 1496, 479]
    heldout_count = pd.Series(0, index=cohort["case_id"])
    for k in range(5):
        fd = load_fold(blca_cohort, k)
        assert fd.family_names == summary["family_names"]
        assert fd.omic_sizes == summary["omic_sizes"][k]
        assert len(fd.bin_edges) == 5
        tr, va = read_split_files(blca_splits)[k]
        assert set(fd.patients.index[fd.patients["split"] == "heldout"]) == set(va)
        assert set(fd.patients.index[fd.patients["split"] == "train"]) == set(tr)
        heldout_count[va] += 1
        assert fd.patients["label"].between(0, 3).all()
        assert all(isinstance(s, list) for s in fd.patients["slide_ids"])
        arrays = fd.omics[fd.patients.index[0]]
        assert [a.shape for a in arrays] == [(n,) for n in fd.omic_sizes]
        assert all(a.dtype == np.float32 for a in arrays)
        # standardised on the train rows: mean 0, sd 1 there (not on the held-out rows)
        train_ids = fd.patients.index[fd.patients["split"] == "train"]
        x = np.stack([np.concatenate(fd.omics[c]) for c in train_ids])
        np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(x.std(0), 1, atol=1e-3)
    # every patient is held out exactly once over the 5 published splits
    assert (heldout_count == 1).all()


def test_heldout_fold_does_not_leak(blca_gdir, blca_splits, tmp_path):
    """Change only the held-out patients of fold 0 (genes and survival): the train rows'
    features and the bin edges must not move. With labels_from=all they do (the check
    is sensitive)."""
    _, va = read_split_files(blca_splits)[0]
    gdir2 = tmp_path / "g2"
    shutil.copytree(blca_gdir, gdir2)
    matrix = pd.read_csv(gdir2 / "matrix.tsv.gz", sep="\t", index_col="case_id")
    matrix.loc[va] = matrix.loc[va] * 7.0 + 100.0
    matrix.to_csv(gdir2 / "matrix.tsv.gz", sep="\t", compression="gzip")
    surv = pd.read_csv(gdir2 / "patients.tsv", sep="\t", index_col="case_id")
    surv.loc[va, "survival_months"] = surv.loc[va, "survival_months"] * 3.0 + 50.0
    surv.loc[va, "censorship"] = 0
    surv.to_csv(gdir2 / "patients.tsv", sep="\t")

    for labels_from in ("train", "all"):
        a = build_cohort(blca_gdir, tmp_path / f"a_{labels_from}", splits=blca_splits, labels_from=labels_from)
        b = build_cohort(gdir2, tmp_path / f"b_{labels_from}", splits=blca_splits, labels_from=labels_from)
        fa, fb = load_fold(tmp_path / f"a_{labels_from}", 0), load_fold(tmp_path / f"b_{labels_from}", 0)
        if labels_from == "all":
            assert not np.allclose(fa.bin_edges, fb.bin_edges)
            continue
        assert a["omic_sizes"][0] == b["omic_sizes"][0]
        np.testing.assert_array_equal(fa.bin_edges, fb.bin_edges)
        train = fa.patients.index[fa.patients["split"] == "train"]
        for c in train:
            for xa, xb in zip(fa.omics[c], fb.omics[c]):
                np.testing.assert_array_equal(xa, xb)
        assert (fa.patients.loc[train, "label"] == fb.patients.loc[train, "label"]).all()
        # the held-out rows did change (transformed with the train statistics)
        assert not np.allclose(fa.omics[va[0]][0], fb.omics[va[0]][0])


def test_labels_from_all_reproduce_published_bins(blca_gdir, tmp_path):
    build_cohort(blca_gdir, tmp_path / "c", n_folds=5, labels_from="all")
    fd = load_fold(tmp_path / "c", 2)
    surv = pd.read_csv(blca_gdir / "patients.tsv", sep="\t", index_col="case_id")
    # the released code: qcut on uncensored times, outer edges widened by 1e-6, cut right=False
    _, q = pd.qcut(surv.loc[surv["censorship"] < 1, "survival_months"], q=4, retbins=True, labels=False)
    q[0] = surv["survival_months"].min() - 1e-6
    q[-1] = surv["survival_months"].max() + 1e-6
    lab = pd.cut(surv["survival_months"], bins=q, labels=False, right=False, include_lowest=True)
    np.testing.assert_allclose(fd.bin_edges, q)
    assert (fd.patients["label"] == lab.loc[fd.patients.index]).all()


def test_train_fitted_bins_are_honest():
    times = np.array([1, 2, 3, 4, 5, 6, 7, 8, 100, 200.0])
    cens = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    edges = fit_bin_edges(times[:8], cens[:8], 4)
    assert edges[0] < 1 and edges[-1] == pytest.approx(8, abs=1e-5)
    # held-out times beyond the train range fall in the last bin, below it in the first
    assert assign_labels([0.1, 100, 200], edges).tolist() == [0, 3, 3]
    assert np.bincount(assign_labels(times[:8], edges)).tolist() == [2, 2, 2, 2]


def test_generated_folds_are_stratified_and_reproducible(blca_gdir, tmp_path):
    build_cohort(blca_gdir, tmp_path / "s1", n_folds=5, seed=7, inner_val_fraction=0.2)
    cohort = pd.read_csv(tmp_path / "s1" / "cohort.tsv", sep="\t")
    rate = cohort["event"].mean()
    seen = []
    for k in range(5):
        p = load_fold(tmp_path / "s1", k).patients
        ho = p[p["split"] == "heldout"]
        seen += list(ho.index)
        # event rate of every held-out fold within 0.02 of the cohort's
        assert abs(ho["event"].mean() - rate) < 0.02, (k, ho["event"].mean(), rate)
        iv = p[p["split"] == "inner_val"]
        n_train_all = (p["split"] != "heldout").sum()
        assert abs(len(iv) - 0.2 * n_train_all) <= 1
        assert abs(iv["event"].mean() - rate) < 0.05
        # the bin edges come from the train rows only (not inner_val, not heldout)
        tr = p[p["split"] == "train"]
        np.testing.assert_allclose(
            load_fold(tmp_path / "s1", k).bin_edges, fit_bin_edges(tr["survival_months"], tr["censorship"], 4)
        )
    assert sorted(seen) == sorted(cohort["case_id"])
    build_cohort(blca_gdir, tmp_path / "s2", n_folds=5, seed=7)
    build_cohort(blca_gdir, tmp_path / "s3", n_folds=5, seed=8)
    ho = lambda d: sorted(load_fold(d, 0).patients.query("split == 'heldout'").index)  # noqa: E731
    assert ho(tmp_path / "s1") == ho(tmp_path / "s2")
    assert ho(tmp_path / "s1") != ho(tmp_path / "s3")


# ---------------------------------------------------------------- small synthetic cohort


@pytest.fixture
def small_gdir(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    n = 30
    ids = [f"TCGA-AA-{i:04d}" for i in range(n)]
    df = pd.DataFrame({
        "case_id": ids, "slide_id": [f"{c}-01Z-00-DX1" for c in ids],
        "survival_months": rng.uniform(1, 100, n).round(2),
        "censorship": (np.arange(n) % 3 == 0).astype(int),
        "G1_rnaseq": rng.normal(size=n), "G2_rnaseq": rng.normal(size=n),
        "G3_cnv": rng.integers(-2, 3, n), "G4_cnv": 0,  # G4: constant, dropped
    })
    df.loc[3, "G1_rnaseq"] = np.nan
    table = tmp_path / "t.csv"
    df.to_csv(table, index=False)
    fams = tmp_path / "f.csv"
    fams.write_text("A,B\nG1,G3\nG2,G4\n")
    out = tmp_path / "g"
    g.write_genomics(g.load_wide_table(table), g.read_families(fams), out)
    return out


def test_slides_and_audit(small_gdir, tmp_path):
    sheet = tmp_path / "slides.tsv"
    sheet.write_text(
        "slide_id\tcase_id\tpath\n"
        "s0a\tTCGA-AA-0000\ta.svs\n" "s0b\tTCGA-AA-0000\tb.svs\n"
        "s1\tTCGA-AA-0001\tc.svs\n"
        "s9\tTCGA-ZZ-9999\td.svs\n"
        + "".join(f"x{i}\tTCGA-AA-{i:04d}\tx.svs\n" for i in range(3, 30))
    )
    summary = tmp_path / "summary.tsv"
    summary.write_text(
        "slide_id\tcase_id\tstatus\tn_patches\treason\n"
        "s0a\tTCGA-AA-0000\tok\t120\t\n" "s0b\tTCGA-AA-0000\tfailed\t0\tcorrupt JPEG\n"
        "s1\tTCGA-AA-0001\tfailed\t0\tno tissue\n" "s9\tTCGA-ZZ-9999\tok\t5\t\n"
        + "".join(f"x{i}\tTCGA-AA-{i:04d}\tok\t10\t\n" for i in range(3, 30))
    )
    out = tmp_path / "c"
    build_cohort(small_gdir, out, slide_sheet=sheet, tiles_summary=summary, n_folds=3)
    cohort = pd.read_csv(out / "cohort.tsv", sep="\t", index_col="case_id", keep_default_na=False)
    audit = pd.read_csv(out / "audit.tsv", sep="\t", index_col="case_id")
    assert cohort.loc["TCGA-AA-0000", "slide_ids"] == "s0a"  # the failed slide is left out
    assert audit.loc["TCGA-AA-0001", "reason"] == "failed slides only"
    assert "no tissue" in audit.loc["TCGA-AA-0001", "detail"]
    assert audit.loc["TCGA-AA-0002", "reason"] == "no slides"
    assert audit.loc["TCGA-ZZ-9999", "reason"] == "no genomics"
    assert len(cohort) == 28 and not set(audit.index) & set(cohort.index)
    fd = load_fold(out, 0)
    assert fd.patients.loc["TCGA-AA-0000", "slide_ids"] == ["s0a"]
    assert fd.omic_sizes == [2, 1]  # G4_cnv constant on train: dropped
    pre = pd.read_csv(out / "folds" / "fold_0" / "preprocessing.tsv", sep="\t", index_col="feature")
    assert pre.loc["G4_cnv", "reason"] == "constant on train" and pre.loc["G4_cnv", "kept"] == 0
    # the missing G1 value was imputed with the train median, so it is finite
    assert np.isfinite(fd.omics["TCGA-AA-0003"][0]).all()
    assert pre.loc["G1_rnaseq", "n_missing_all"] == 1
    # the tiling summary alone is also a slide list
    build_cohort(small_gdir, tmp_path / "c2", tiles_summary=summary, n_folds=3)
    audit2 = pd.read_csv(tmp_path / "c2" / "audit.tsv", sep="\t", index_col="case_id")
    assert audit2.loc["TCGA-AA-0002", "reason"] == "no slides"


def test_bad_split_files_and_empty_cohort(small_gdir, tmp_path, capsys):
    sdir = tmp_path / "splits"
    sdir.mkdir()
    (sdir / "splits_0.csv").write_text(",train,val\n0,TCGA-AA-0001,TCGA-AA-0002\n1,TCGA-XX-NOPE,\n")
    rc = main(["cohort", str(small_gdir), "-o", str(tmp_path / "c"), "--splits", str(sdir)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "splits_0.csv: patient TCGA-XX-NOPE is unknown" in err and "\n" not in err
    assert not (tmp_path / "c" / "folds.json").exists()
    (sdir / "splits_0.csv").write_text(",train,val\n0,TCGA-AA-0001,TCGA-AA-0001\n")
    with pytest.raises(CMTAError, match="in both train and val"):
        read_split_files(sdir)
    sheet = tmp_path / "slides.tsv"
    sheet.write_text("slide_id\tcase_id\tpath\ns\tTCGA-QQ-0000\tx.svs\n")
    with pytest.raises(CMTAError, match="no patient left"):
        build_cohort(small_gdir, tmp_path / "c3", slide_sheet=sheet)
    with pytest.raises(CMTAError, match="folds.json: missing"):
        load_fold(tmp_path / "c3", 0)


def test_rerun_removes_stale_marker_and_folds(small_gdir, tmp_path):
    out = tmp_path / "c"
    build_cohort(small_gdir, out, n_folds=5)
    assert (out / "folds" / "fold_4").is_dir()
    build_cohort(small_gdir, out, n_folds=3)
    assert not (out / "folds" / "fold_3").exists()
    assert json.loads((out / "folds.json").read_text())["n_folds"] == 3
    with pytest.raises(CMTAError):
        build_cohort(small_gdir, out, n_folds=3, labels_from="bogus")
    # a failed rerun, even on a bad argument, leaves no earlier folder to be taken for its own
    assert not (out / "folds.json").exists() and not (out / "folds").exists()


# ---------------------------------------------------------------- the Snakemake rules


@pytest.mark.slow
def test_workflow_genomics_and_cohort_on_blca(tcga_dir, tmp_path):
    """download_families (file:// URL, checksum checked) -> genomics -> cohort, genomics only."""
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "slides.tsv").write_text("slide_id\tcase_id\tpath\n")
    sig = (tcga_dir / "signatures.csv").resolve()
    config = {
        "outdir": "results",
        "slides": {"sheet": "config/slides.tsv"},
        "genomics": {"table": str(tcga_dir / "tcga_blca_all_clean.csv.gz"), "families": None,
                     "families_url": f"file://{sig}"},
        "cohort": {"splits": str(tcga_dir / "splits" / "5foldcv" / "tcga_blca")},
    }

    def snakemake(*args):
        return subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(repo / "workflow" / "Snakefile"),
             "--directory", str(tmp_path), "--cores", "1", *args],
            capture_output=True, text=True, timeout=600,
        )

    # a wrong checksum stops the download and leaves no family file behind
    bad = {**config, "genomics": {**config["genomics"], "families_sha256": "0" * 64}}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(bad))
    r = snakemake("results/resources/signatures.csv")
    assert r.returncode != 0
    assert "FAILED" in (tmp_path / "results/logs/download_families.log").read_text()
    assert not (tmp_path / "results/resources/signatures.csv").exists()

    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))

    r = snakemake("results/cohort/folds.json")
    assert r.returncode == 0, r.stderr[-3000:]
    fam = pd.read_csv(tmp_path / "results/genomics/families.tsv", sep="\t")
    assert fam["n_features"].tolist() == [94, 334, 521, 468, 1496, 479]
    fd = load_fold(tmp_path / "results/cohort", 4)
    assert len(fd.patients) == 373


def test_paper_inputs_match_the_released_code_in_every_blca_fold(tcga_dir, blca_cohort, tmp_path):
    """protocol: paper (drop_last_column, constant columns kept): every fold has the released
    code's family sizes, TF 1,495, so the authors' checkpoints load in folds 3 and 4 too;
    the default drops the columns constant on those folds' training rows (negative control)."""
    gdir = tmp_path / "genomics"
    data = g.load_wide_table(tcga_dir / "tcga_blca_all_clean.csv.gz", drop_last_column=True)
    g.write_genomics(data, g.read_families(tcga_dir / "signatures.csv"), gdir)
    splits = tcga_dir / "splits" / "5foldcv" / "tcga_blca"
    released = [94, 334, 521, 468, 1495, 479]
    paper = build_cohort(gdir, tmp_path / "paper", splits=splits, labels_from="all", drop_constant=False)
    assert paper["omic_sizes"] == [released] * 5 and paper["drop_constant"] is False
    for k in (3, 4):
        fd = load_fold(tmp_path / "paper", k)
        assert [len(o) for o in fd.omics[fd.patients.index[0]]] == released
        assert all(np.isfinite(np.concatenate(o)).all() for o in fd.omics.values())
    pre = pd.read_csv(tmp_path / "paper" / "folds" / "fold_3" / "preprocessing.tsv", sep="\t")
    assert pre["kept"].all() and not (pre["reason"] == "constant on train").any()
    # the default (all columns, constants dropped): folds 3 and 4 lose a TF column each
    sizes = json.loads((blca_cohort / "folds.json").read_text())["omic_sizes"]
    assert sizes[0][4] == 1496 and sizes[3][4] < 1496 and sizes[4][4] < 1496
    dropped = set()
    for k in (3, 4):
        pre = pd.read_csv(blca_cohort / "folds" / f"fold_{k}" / "preprocessing.tsv", sep="\t")
        dropped |= set(pre.loc[pre["reason"] == "constant on train", "feature"])
    assert dropped <= {"CDX4_rnaseq", "GSC2_rnaseq"} and dropped


def test_kept_constant_columns_are_scaled_as_the_authors_standard_scaler():
    """drop_constant=False: the same values as scikit-learn's StandardScaler fitted on the
    train rows (the authors' dataset code), constant and near-constant columns centred to 0,
    never inf or NaN."""
    from sklearn.preprocessing import StandardScaler

    from cmta_pipeline.cohort.preprocessing import fit_transform_fold

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=40), np.full(40, 0.1), np.full(40, -0.3),
                         rng.integers(-2, 3, 40).astype(float)])
    X[30:, 1] = 2.0  # constant on the train rows only
    train = np.arange(40) < 30
    modality = np.array(["rnaseq"] * 3 + ["cnv"])
    Xk, stats = fit_transform_fold(X, modality, train, False, True, drop_constant=False)
    ref = StandardScaler().fit(X[train]).transform(X)
    assert np.isfinite(Xk).all() and stats["kept"].all()
    np.testing.assert_allclose(Xk, ref, rtol=1e-12, atol=1e-12)
    assert np.abs(Xk[train][:, 1:3]).max() < 1e-12
    Xd, stats_d = fit_transform_fold(X, modality, train, False, True)
    assert list(stats_d["kept"]) == [1, 0, 0, 1]  # default: the constant columns dropped
