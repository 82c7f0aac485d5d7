"""Several encoders in one run (features.encoders, issue 28 item 5): each encoder's tiles
and features once per slide, the slide models trained per encoder (<run>@<encoder> after
the first encoder, whose runs keep today's names), Table 1 with an encoder column and paired
comparisons between encoders on the same held-out patients."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _training_helpers import fake_run

from cmta_pipeline.features.encoders.registry import get_spec
from cmta_pipeline.report.table1 import build_table1, markdown
from cmta_pipeline.slides.synthetic import demo_specimen, write_synthetic_slide

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
CASES = ["TCGA-ZF-AA4N", "TCGA-BL-A13I", "TCGA-CU-A0YN", "TCGA-G2-A3IE"]


def snakemake(wd: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    (wd / "config").mkdir(parents=True, exist_ok=True)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(wd), *args]
    return subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=900)


def planned(out: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of each job a run plans or runs."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", out):
        rule = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if rule:
            wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.append((rule.group(1), dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}))
    return jobs


def _config(tcga_dir: Path, encoders: list[str] | None, **training) -> dict:
    features = {"weights": "random", "input_px": 32, "workers": 0, "threads": 2, "slides_per_job": 4}
    if encoders:
        features["encoders"] = encoders
    return {
        "outdir": "results",
        "slides": {"folder": "slides"},
        "tiling": {"preset": "biopsy", "min_tissue_fraction": 0.9},  # 24 patches a slide
        "features": features,
        "genomics": {"table": str(tcga_dir / "tcga_blca_all_clean.csv.gz"),
                     "families": str(tcga_dir / "signatures.csv")},
        "cohort": {"n_folds": 2, "n_bins": 2},
        "training": {"models": ["cmta"], "folds": [0], "epochs": 1, "threads": 1, **training},
        "table1": {"floor": None, "n_boot": 100},
        "heatmaps": {"runs": []},
    }


def _slides(folder: Path, cases: list[str] = CASES) -> None:
    shapes, w, h = demo_specimen()
    folder.mkdir(parents=True)
    for i, case in enumerate(cases):
        write_synthetic_slide(folder / f"{case}-01Z-00-DX1.tif", shapes[:1], w, h, 0.5, seed=i)


@pytest.mark.slow
def test_several_encoders_plan_their_own_tiles_features_and_runs(tmp_path, tcga_dir):
    """A dry run of [resnet50, uni_v1, ctranspath] with cmta, an ablation and snn: each
    encoder's features in its folder (UNI shares resnet50's tiles, CTransPath has its own),
    the slide runs once per encoder (<run>@<encoder> after the first), snn once; the
    config's mistakes are one line naming the key (features.encoder alone, today's key:
    tests/test_workflow.py and test_cohorts.py)."""
    _slides(tmp_path / "slides", CASES[:1])
    config = _config(tcga_dir, ["resnet50", "uni_v1", "ctranspath"], models=["cmta", "snn"],
                     ablations=["no_ppeg"])
    config["features"]["slides_per_job"] = 1
    r = snakemake(tmp_path, config, "-n")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    jobs = planned(out)
    runs = sorted(w["run"] for rule, w in jobs if rule == "train")
    assert runs == sorted(["cmta", "cmta-no_ppeg", "snn", "cmta@uni_v1", "cmta-no_ppeg@uni_v1",
                           "cmta@ctranspath", "cmta-no_ppeg@ctranspath"]), runs
    geometry = f"_{get_spec('ctranspath').geometry()}"
    assert sorted(w["geometry"] for rule, w in jobs if rule == "tile") == ["", geometry]
    assert sorted(w["geometry"] for rule, w in jobs if rule == "tile_summary") == ["", geometry]
    assert f"results/tiles{geometry}/summary.tsv" in out and "results/tiles/summary.tsv" in out
    # table 1 reads every run's summary; no weights are fetched (random)
    assert "results/train/cmta-no_ppeg@ctranspath/fold_0/summary.json" in out
    assert not [rule for rule, _ in jobs if rule.startswith("fetch")]

    # published weights: one fetch rule per encoder; each encoder job reads its own tiles
    slide = f"{CASES[0]}-01Z-00-DX1"
    targets = [f"results/features{d}/{slide}.features.h5" for d in ("", "/uni_v1", "/ctranspath")]
    r = snakemake(tmp_path, {**config, "features": {**config["features"], "weights": "imagenet"}},
                  "-n", "-p", *targets)
    assert r.returncode == 0, r.stderr[-3000:]
    fetch = sorted(rule for rule, _ in planned(r.stdout) if rule.startswith("fetch"))
    assert fetch == ["fetch_encoder_weights", "fetch_encoder_weights_ctranspath", "fetch_weights"], fetch
    line = next(x for x in r.stdout.splitlines() if "extract" in x and "--encoder ctranspath" in x)
    assert f"results/tiles{geometry}/{slide}/{slide}.coords.h5" in line
    assert "-o results/features/ctranspath/encoded" in line and "--weights resources/weights/ctranspath/" in line
    line = next(x for x in r.stdout.splitlines() if "extract" in x and "--encoder uni_v1" in x)
    assert f"results/tiles/{slide}/{slide}.coords.h5" in line and "results/features/uni_v1/encoded" in line

    # with cohorts: each cohort trains every encoder's runs; the run tiles each slide once
    # per geometry
    sheet = tmp_path / "sheet.tsv"
    pd.DataFrame([("S1", "TCGA-AA-0001", "/data/s1.svs")], columns=["slide_id", "case_id", "path"]).to_csv(
        sheet, sep="\t", index=False)
    splits = tcga_dir / "splits" / "5foldcv"
    cohorts = {name: {"genomics": {"table": str(tcga_dir / f"tcga_{name}_all_clean.csv.gz")},
                      "cohort": {"splits": str(splits / f"tcga_{name}")}, "slides": {"sheet": str(sheet)}}
               for name in ("blca", "ucec")}
    cohorts["ucec"]["genomics"]["unsuffixed"] = "mut"
    several = {**{k: v for k, v in config.items() if k not in ("slides", "cohort")}, "cohorts": cohorts,
               "genomics": {"families": str(tcga_dir / "signatures.csv")}}
    r = snakemake(tmp_path / "cohorts", {**several, "features": {**config["features"],
                                                                 "encoders": ["resnet50", "ctranspath"]}}, "-n")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    jobs = planned(out)
    assert sorted(w["run"] for rule, w in jobs if rule == "ucec_train") == [
        "cmta", "cmta-no_ppeg", "cmta-no_ppeg@ctranspath", "cmta@ctranspath", "snn"]
    assert sorted(w["geometry"] for rule, w in jobs if rule == "tile") == ["", geometry]
    assert "results/blca/train/cmta-no_ppeg@ctranspath/fold_0/summary.json" in out  # table 1 reads it

    for features, key in (
        ({"encoders": ["resnet50", "uni_v1", "resnet50"]}, "features.encoders: 'resnet50' is listed twice"),
        ({"encoder": "uni_v1", "encoders": ["resnet50", "ctranspath"]}, "features.encoder (uni_v1) and"),
        ({"weights": "my.pth", "encoders": ["resnet50", "uni_v1"]}, "features.weights: my.pth is one encoder's"),
    ):
        bad = {**config, "features": {**config["features"], **features}}
        r = snakemake(tmp_path, bad, "-n")
        assert r.returncode != 0 and key in r.stdout + r.stderr, (features, (r.stdout + r.stderr)[-2000:])


@pytest.mark.slow
def test_two_encoders_in_one_run_and_a_second_encoder_added_reruns_only_its_jobs(tmp_path, tcga_dir):
    """A finished run of resnet50 (four small slides, CMTA, one fold, one epoch); then
    CTransPath (random weights) added: the dry run plans its tiling, its features, its
    CMTA and the report and Table 1 only; the run trains it, and table1.tsv has both
    encoders with a paired comparison of CMTA on resnet50 against CMTA on CTransPath."""
    _slides(tmp_path / "slides")
    one = _config(tcga_dir, None)
    r = snakemake(tmp_path, one, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    res = tmp_path / "results"
    assert (res / "train/cmta/fold_0/summary.json").is_file()

    two = _config(tcga_dir, ["resnet50", "ctranspath"])
    r = snakemake(tmp_path, two, "-n")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    jobs = planned(out)
    geometry = f"_{get_spec('ctranspath').geometry()}"
    assert {rule for rule, _ in jobs} == {"tile", "tile_summary", "qc_pictures", "train", "report", "table1",
                                          "all"}, jobs
    assert {w.get("geometry") for rule, w in jobs if rule.startswith("tile")} == {geometry}
    assert [w["run"] for rule, w in jobs if rule == "train"] == ["cmta@ctranspath"]

    r = snakemake(tmp_path, two, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    ran = planned(r.stderr)
    assert {rule for rule, _ in ran} == {"tile", "tile_summary", "qc_pictures", "encode_batch_0", "extract",
                                         "train", "report", "table1", "all"}, ran
    assert {w["encoder_dir"] for rule, w in ran if rule in ("encode_batch_0", "extract")} == {"/ctranspath"}
    assert [w["run"] for rule, w in ran if rule == "train"] == ["cmta@ctranspath"]
    ctp = res / "features" / "ctranspath"
    assert len(list(ctp.glob("*.features.h5"))) == len(CASES)
    import torch

    ckpt = torch.load(res / "train/cmta@ctranspath/fold_0/model.pt", weights_only=True)
    assert ckpt["model"]["encoder"] == "ctranspath" and ckpt["model"]["path_dim"] == get_spec("ctranspath").dim
    assert json.loads((res / "train/cmta/fold_0/summary.json").read_text())["encoder"] == "resnet50"
    preds = pd.read_csv(res / "train/cmta@ctranspath/fold_0/predictions.tsv", sep="\t")
    assert set(preds["encoder"]) == {"ctranspath"}

    long = pd.read_csv(res / "table1.tsv", sep="\t")
    c = long[long.metric == "cindex_harrell"]
    assert sorted(zip(c.cohort, c.run, c.encoder)) == [("blca", "cmta", "ctranspath"), ("blca", "cmta", "resnet50")]
    pairs = pd.read_csv(res / "table1_paired.tsv", sep="\t")
    across = pairs[(pairs.run_a == pairs.run_b) & (pairs.encoder_a != pairs.encoder_b)]
    assert across[["run_a", "encoder_a", "encoder_b"]].values.tolist() == [["cmta", "resnet50", "ctranspath"]]
    assert across["n_patients"].iloc[0] > 0
    md = (res / "table1.md").read_text()
    assert "| cmta@resnet50 |" in md and "| cmta@ctranspath |" in md and "cmta@resnet50 - cmta@ctranspath" in md
    # the finished run of two encoders: a speed setting (slides per encoder job, threads)
    # reruns nothing
    faster = {**two, "features": {**two["features"], "slides_per_job": 1, "threads": 1}}
    r = snakemake(tmp_path, faster, "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]


# ---- Table 1 of several encoders, from run folders -------------------------------------


def _run(root: Path, run: str, encoder: str | None, seed: int, folds: int = 2) -> None:
    fake_run(root, run, folds, 30, seed, {"encoder": encoder})


def test_table1_rows_per_encoder_and_paired_comparisons_between_encoders(tmp_path):
    """cmta (whose summary names resnet50), cmta@uni_v1, attmil, attmil@uni_v1 and snn:
    rows per (run, encoder), CMTA against each run within each encoder (snn in both), and
    each model against itself across the encoders. One encoder: no encoder in the labels
    and the pairs of today."""
    cohort = tmp_path / "blca"
    for i, (run, enc) in enumerate([("cmta", "resnet50"), ("cmta@uni_v1", "uni_v1"), ("attmil", "resnet50"),
                                    ("attmil@uni_v1", "uni_v1"), ("snn", None)]):
        _run(cohort, run, enc, seed=i)
    long, pairs = build_table1([("blca", cohort)], n_boot=50)
    c = long[long.metric == "cindex_harrell"]
    assert sorted(zip(c.run, c.encoder)) == [("attmil", "resnet50"), ("attmil", "uni_v1"), ("cmta", "resnet50"),
                                             ("cmta", "uni_v1"), ("snn", "none")]
    got = [tuple(p) for p in pairs[["run_a", "encoder_a", "run_b", "encoder_b"]].values.tolist()]
    assert got == [("cmta", "resnet50", "attmil", "resnet50"), ("cmta", "resnet50", "snn", "none"),
                   ("cmta", "uni_v1", "attmil", "uni_v1"), ("cmta", "uni_v1", "snn", "none"),
                   ("attmil", "resnet50", "attmil", "uni_v1"), ("cmta", "resnet50", "cmta", "uni_v1")], got
    same = pairs[(pairs.run_a == "cmta") & (pairs.encoder_b == "uni_v1") & (pairs.run_b == "cmta")].iloc[0]
    assert same["n_patients"] == 60  # the same held-out patients of both folds
    md = markdown(long, pairs, {}, None)
    assert "| cmta@uni_v1 |" in md and "| snn |" in md and "blca: cmta@resnet50 - cmta@uni_v1 = " in md

    # one encoder: labels and pairs as before the encoder column
    one = tmp_path / "one"
    for i, (run, enc) in enumerate([("cmta", "resnet50"), ("snn", None)]):
        _run(one, run, enc, seed=i)
    long, pairs = build_table1([("one", one)], n_boot=50)
    assert set(long["encoder"]) == {"resnet50", "none"}
    assert pairs[["run_a", "run_b"]].values.tolist() == [["cmta", "snn"]]
    md = markdown(long, pairs, {}, None)
    assert "| cmta |" in md and "@" not in md
