"""Several cohorts in one run (config cohorts:) and Table 1 from the workflow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"


def snakemake(wd: Path, *args, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(wd), *args]
    return subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=timeout)


def _config(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def _jobs(out: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}


def _two_cohorts(tcga: Path, **training) -> dict:
    splits = tcga / "splits" / "5foldcv"
    return {
        "outdir": "results",
        "cohorts": {
            "blca": {"genomics": {"table": str(tcga / "tcga_blca_all_clean.csv.gz")},
                     "cohort": {"splits": str(splits / "tcga_blca")}},
            # UCEC's mutation columns have no suffix (shared/data/README.md)
            "ucec": {"genomics": {"table": str(tcga / "tcga_ucec_all_clean.csv.gz"), "unsuffixed": "mut"},
                     "cohort": {"splits": str(splits / "tcga_ucec")}},
        },
        "genomics": {"families": str(tcga / "signatures.csv")},
        "training": {"models": ["snn", "coxnet"], "folds": [0], "epochs": 1, "threads": 1, **training},
    }


@pytest.mark.slow
def test_two_cohorts_in_one_run_give_table1_and_paired_comparisons(tmp_path, tcga_dir):
    """One `snakemake`: BLCA and UCEC genomic tables with their published splits, snn and
    coxnet for one epoch on fold 0 -> <outdir>/<cohort>/... and one table1 with the four
    (cohort, run) rows and a paired comparison per cohort."""
    wd = _config(tmp_path, _two_cohorts(tcga_dir))
    r = snakemake(wd, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    res = wd / "results"
    for c in ("blca", "ucec"):
        assert (res / c / "cohort" / "folds.json").is_file()
        assert (res / c / "report" / "cindex_summary.tsv").is_file()
        for run in ("snn", "coxnet"):
            assert (res / c / "train" / run / "fold_0" / "predictions.tsv").is_file()
    assert not (res / "genomics").exists() and not (res / "train").exists()
    long = pd.read_csv(res / "table1.tsv", sep="\t")
    c = long[long.metric == "cindex_harrell"]
    assert sorted(zip(c.cohort, c.run)) == [("blca", "coxnet"), ("blca", "snn"), ("ucec", "coxnet"), ("ucec", "snn")]
    assert (c["sd_ddof"] == 1).all() and (c["protocol"] == "honest").all()
    assert c["mean"].between(0.3, 0.9).all()
    pairs = pd.read_csv(res / "table1_paired.tsv", sep="\t")
    assert sorted(pairs["cohort"]) == ["blca", "ucec"] and (pairs["n_boot"] == 1000).all()
    md = (res / "table1.md").read_text()
    assert "| model | blca | ucec |" in md and "Paired comparisons" in md
    assert (res / "table1.png").is_file()
    r = snakemake(wd, "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]


@pytest.mark.slow
def test_cohorts_plan_and_a_third_cohort_adds_its_own_jobs(tmp_path, tcga_dir):
    config = _two_cohorts(tcga_dir)
    wd = _config(tmp_path, config)
    r = snakemake(wd, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout)
    assert jobs["blca_train"] == 2 and jobs["ucec_train"] == 2 and jobs["table1"] == 1
    config["cohorts"]["third"] = config["cohorts"]["blca"]
    _config(tmp_path, config)
    r = snakemake(wd, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout)
    assert jobs["third_train"] == 2 and jobs["third_genomics"] == 1 and jobs["table1"] == 1
    assert "results/third/train/coxnet/fold_0/summary.json" in r.stdout
    # protocol paper: each cohort's part resolves it with its own study (none at the top
    # level, which would stop a run of one cohort)
    config["protocol"] = "paper"
    _config(tmp_path, config)
    r = snakemake(wd, "-n", "-p")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert out.count("protocol: paper sets cohort.labels_from = all") == 3
    # gpu: auto is resolved once per run, not once per cohort
    assert out.count("gpu: auto -> false") == 1, out[-3000:]
    assert "-o results/ucec/genomics" in out and "--drop-last-column" in out


def test_single_cohort_keeps_its_paths_and_adds_table1_with_the_floor(tmp_path, tcga_dir):
    config = _two_cohorts(tcga_dir)
    single = {"outdir": "results", "genomics": {**config["cohorts"]["blca"]["genomics"],
                                               "families": str(tcga_dir / "signatures.csv")},
              "cohort": config["cohorts"]["blca"]["cohort"],
              "training": {**config["training"], "models": ["snn"]}}
    wd = _config(tmp_path, single)
    r = snakemake(wd, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "results/train/snn/fold_0/summary.json" in out and "results/report/cindex_summary.tsv" in out
    # the floor is trained for the table and reported like any run
    assert "results/train/coxnet/fold_0/summary.json" in out and "results/table1.md" in out
    single["table1"] = {"floor": None}
    _config(tmp_path, single)
    r = snakemake(wd, "-n")
    assert r.returncode == 0 and "train/coxnet" not in r.stdout, r.stderr[-3000:]


def _sheet(path: Path, rows: list[tuple[str, str, str]]) -> str:
    pd.DataFrame(rows, columns=["slide_id", "case_id", "path"]).to_csv(path, sep="\t", index=False)
    return str(path)


def test_a_slide_in_two_cohorts_is_tiled_once_and_conflicts_are_named(tmp_path, tcga_dir):
    a = _sheet(tmp_path / "a.tsv", [("S1", "TCGA-AA-0001", "/data/s1.svs"), ("S2", "TCGA-AA-0002", "/data/s2.svs")])
    b = _sheet(tmp_path / "b.tsv", [("S2", "TCGA-AA-0002", "/data/s2.svs"), ("S3", "TCGA-AA-0003", "/data/s3.svs")])
    config = _two_cohorts(tcga_dir)
    config["cohorts"]["blca"]["slides"] = {"sheet": a}
    config["cohorts"]["ucec"]["slides"] = {"sheet": b}
    wd = _config(tmp_path, config)
    r = snakemake(wd, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout)
    assert jobs["tile"] == 3  # S1, S2, S3: S2 once
    assert {"blca_tile_summary", "ucec_tile_summary", "tile_summary"} <= set(jobs)
    assert "results/tiles/S2.tile.json" in r.stdout and "results/blca/tiles/S2" not in r.stdout
    # the same slide id with another file: named, with both cohorts
    _sheet(tmp_path / "b.tsv", [("S2", "TCGA-AA-0002", "/elsewhere/s2.svs")])
    r = snakemake(wd, "-n")
    assert r.returncode != 0
    assert "slide 'S2' is /data/s2.svs in cohort 'blca' but /elsewhere/s2.svs in cohort 'ucec'" in r.stdout + r.stderr



def test_cohorts_share_the_tiles_and_features_of_another_encoder(tmp_path, tcga_dir):
    """features.encoder with its own geometry (ctranspath: 112 um -> 224 px) in a run of two
    cohorts: the run tiles each slide once into tiles_<geometry>/ and encodes it once into
    features/<encoder>/; each cohort's tiling summary sits in its own folder."""
    a = _sheet(tmp_path / "a.tsv", [("S1", "TCGA-AA-0001", "/data/s1.svs"), ("S2", "TCGA-AA-0002", "/data/s2.svs")])
    b = _sheet(tmp_path / "b.tsv", [("S2", "TCGA-AA-0002", "/data/s2.svs")])
    config = _two_cohorts(tcga_dir, models=["cmta"])
    config["cohorts"]["blca"]["slides"] = {"sheet": a}
    config["cohorts"]["ucec"]["slides"] = {"sheet": b}
    config["features"] = {"encoder": "ctranspath", "weights": "random"}
    r = snakemake(_config(tmp_path, config), "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout)
    assert jobs["tile"] == 2 and jobs["tile_summary"] == 1
    assert {"blca_tile_summary", "ucec_tile_summary"} <= set(jobs)
    assert "results/tiles_fov256um_in224/S2.tile.json" in r.stdout
    assert "results/blca/tiles_fov256um_in224/summary.tsv" in r.stdout
    assert "results/ucec/tiles_fov256um_in224/summary.tsv" in r.stdout
    assert "results/tiles/" not in r.stdout

@pytest.mark.parametrize("name", ["my-cohort", "tiles", "1blca"])
def test_a_cohort_name_that_is_no_safe_folder_name_is_refused(tmp_path, tcga_dir, name):
    config = _two_cohorts(tcga_dir)
    config["cohorts"][name] = config["cohorts"].pop("ucec")
    r = snakemake(_config(tmp_path, config), "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"config cohorts: {name!r} is not a usable cohort name" in out, out[-2000:]


@pytest.mark.slow
def test_cohort_names_whose_rule_names_collide_are_refused(tmp_path, tcga_dir):
    """blca's rule predict_genomics and blca_predict's rule genomics would both be
    blca_predict_genomics: refused in one line naming both; blca + predict_blca (no
    collision) plans (the control)."""
    config = _two_cohorts(tcga_dir)
    config["cohorts"]["blca_predict"] = config["cohorts"].pop("ucec")
    r = snakemake(_config(tmp_path, config), "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert ("config cohorts: 'blca' and 'blca_predict' both make the rule name "
            "blca_predict_genomics (rule predict_genomics of 'blca', rule genomics of "
            "'blca_predict')") in out, out[-2000:]
    assert "CreateRuleException" not in out
    config["cohorts"]["predict_blca"] = config["cohorts"].pop("blca_predict")
    r = snakemake(_config(tmp_path, config), "-n")
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    assert _jobs(r.stdout)["predict_blca_genomics"] == 1
