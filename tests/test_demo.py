"""The self-contained demo: the synthetic cohort and its planted risk, and the demo workflow
on a copy of the repository with nothing beside it (no ../shared)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cmta_pipeline.demo.cohort import (
    DemoSettings,
    plant_patients,
    render_demo_slide,
    slide_sheet,
    write_demo_cohort,
)
from cmta_pipeline.demo.summary import oracle_cindexes, planted_summary

REPO = Path(__file__).resolve().parents[1]
FAMILIES = REPO / "resources" / "demo" / "families.csv"
TINY = {"n_patients": 12, "slide_um": [640, 512], "tissue_mm2": 0.08}


def test_planted_risk_needs_both_modalities():
    """Each modality holds half of the risk: alone it is far below the planted risk."""
    p = plant_patients(DemoSettings(n_patients=400, seed=3))
    assert abs(p["censorship"].mean() - 0.3) < 0.08
    assert np.corrcoef(p["morphology"], p["genomic"])[0, 1] < 0.15
    c = oracle_cindexes(p)
    oracle = c["planted risk (oracle)"]
    assert oracle > 0.88
    for half in ("morphology score alone", "genomic score alone"):
        assert 0.62 < c[half] < oracle - 0.12
    # the risk is what decides survival: the riskiest quartile dies first
    q = pd.qcut(p["risk"], 4, labels=False)
    assert p.loc[q == 3, "event_months"].median() < p.loc[q == 0, "event_months"].median() / 4


def test_same_seed_same_cohort_other_seed_other():
    a, b = plant_patients(DemoSettings(n_patients=20)), plant_patients(DemoSettings(n_patients=20))
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["risk"], plant_patients(DemoSettings(n_patients=20, seed=2))["risk"])


def test_unknown_setting_is_named():
    from cmta_pipeline.errors import CMTAError

    with pytest.raises(CMTAError, match="demo: unknown setting.*n_patient\\b"):
        DemoSettings.from_config({"n_patient": 5})


def test_morphology_score_changes_colour_and_nuclei():
    """Riskier morphology: purpler stain and more nuclear (dark) area, what a random
    encoder can see; tissue placement alone does not carry it."""
    s = DemoSettings(slide_um=(640, 512), tissue_mm2=0.1)
    looks = {}
    for score in (-2.0, 0.0, 2.0):
        img = render_demo_slide(score, np.random.default_rng(0), s).astype(float)
        tissue = img.sum(axis=2) < 3 * 235
        px = img[tissue]
        looks[score] = (px[:, 0].mean() - px[:, 2].mean(), (px.sum(axis=1) < 3 * 130).mean())
    red_minus_blue = [looks[k][0] for k in (-2.0, 0.0, 2.0)]
    dark_fraction = [looks[k][1] for k in (-2.0, 0.0, 2.0)]
    assert red_minus_blue[0] > red_minus_blue[1] > red_minus_blue[2]
    assert dark_fraction[0] < dark_fraction[1] < dark_fraction[2]


def test_cohort_files_read_by_the_pipeline(tmp_path):
    """Slides open in OpenSlide at the planted pixel size, the table reads as six families,
    and signal genes follow the genomic score while noise genes do not."""
    import openslide

    from cmta_pipeline.cli import main

    s = DemoSettings.from_config({**TINY, "n_patients": 40})
    planted = write_demo_cohort(s, FAMILIES, tmp_path / "cohort")
    assert planted["n_patients"] == 40
    sheet = slide_sheet(s, tmp_path / "cohort")
    for path in sheet["path"][:3]:
        with openslide.OpenSlide(path) as slide:
            assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(1.0)
            assert slide.level_count == 3 and slide.dimensions == (640, 512)
    assert main(["genomics", str(tmp_path / "cohort" / "genomics.csv"), "--families", str(FAMILIES),
                 "-o", str(tmp_path / "genomics")]) == 0
    fams = pd.read_csv(tmp_path / "genomics" / "families.tsv", sep="\t")
    assert len(fams) == 6
    patients = pd.read_csv(tmp_path / "cohort" / "patients.tsv", sep="\t").set_index("case_id")
    table = pd.read_csv(tmp_path / "cohort" / "genomics.csv").set_index("case_id")
    g = patients.loc[table.index, "genomic"]
    assert np.corrcoef(g, table["DEMOONC01_rnaseq"])[0, 1] > 0.2
    assert np.corrcoef(g, table["DEMOTSG01_rnaseq"])[0, 1] < -0.2
    noise = [np.corrcoef(g, table[f"DEMOPK{i:02d}_rnaseq"])[0, 1] for i in range(1, 17)]
    assert abs(np.mean(noise)) < 0.15
    assert set(np.unique(table.filter(like="_cnv"))) <= {-2.0, -1.0, 0.0, 1.0, 2.0}


def test_slides_drawn_in_several_processes_are_the_same_files(tmp_path):
    """`cmta demo-cohort --workers 2` (the rule's threads) writes the same bytes as one
    process; negative control through the same call: another seed gives other slides."""
    s = DemoSettings.from_config({**TINY, "n_patients": 10})
    write_demo_cohort(s, FAMILIES, tmp_path / "one", workers=1)
    write_demo_cohort(s, FAMILIES, tmp_path / "two", workers=2)
    write_demo_cohort(DemoSettings.from_config({**TINY, "n_patients": 10, "seed": 2}), FAMILIES,
                      tmp_path / "other", workers=2)
    names = sorted(p.name for p in (tmp_path / "one" / "slides").iterdir())
    assert len(names) == 10
    for name in names:
        one = (tmp_path / "one" / "slides" / name).read_bytes()
        assert (tmp_path / "two" / "slides" / name).read_bytes() == one, name
        assert (tmp_path / "other" / "slides" / name).read_bytes() != one, name
    for table in ("genomics.csv", "patients.tsv"):
        assert (tmp_path / "two" / table).read_bytes() == (tmp_path / "one" / table).read_bytes()


def test_planted_summary_puts_the_oracle_beside_the_runs(tmp_path):
    p = plant_patients(DemoSettings(n_patients=30))
    p.to_csv(tmp_path / "patients.tsv", sep="\t", index=False)
    rows = []
    for fold in (0, 1):
        held = p.iloc[fold::2]
        d = tmp_path / "train" / "snn" / f"fold_{fold}"
        d.mkdir(parents=True)
        held.assign(fold=fold, risk=held["genomic"], time=held["survival_months"],
                    event=1 - held["censorship"]).to_csv(d / "predictions.tsv", sep="\t", index=False)
        rows.append({"run": "snn", "fold": fold, "cindex": 0.6 + 0.1 * fold})
    pd.DataFrame(rows).to_csv(tmp_path / "cindex.tsv", sep="\t", index=False)
    t = planted_summary(tmp_path / "patients.tsv", tmp_path / "cindex.tsv", tmp_path / "train").set_index("run")
    assert t.loc["snn", "mean"] == pytest.approx(0.65)
    oracle = [oracle_cindexes(p.iloc[k::2])["planted risk (oracle)"] for k in (0, 1)]
    assert t.loc["planted risk (oracle)", ["fold_0", "fold_1"]].tolist() == pytest.approx(oracle)
    # the run's risk is the genomic score: its own c-index is the "genomic alone" row's
    assert {"morphology score alone", "genomic score alone"} <= set(t.index)


# ---- the workflow on a fresh copy of the repository, with no ../shared beside it ----------


def _fresh_copy(tmp_path) -> Path:
    """The repository's files (tracked and untracked, not ignored) in tmp_path/clone."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    clone = tmp_path / "clone"
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    assert not (tmp_path / "shared").exists()
    return clone


def _snakemake(clone, *args, targets=(), timeout=600):
    env = {**os.environ, "CMTA_SHARED_DATA": str(clone.parent / "no-shared-data"),
           "PYTHONPATH": str(clone)}
    cmd = [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "--cores", "2",
           "--configfile", "config/demo/config.yaml", "tiny.yaml", *args, "--", *targets]
    return subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_generates_its_inputs_and_plans_every_stage_without_shared(tmp_path):
    """A fresh copy with no ../shared: the demo's generation rule runs, then a dry run of the
    whole demo plans every stage, from slides to the planted-risk table."""
    clone = _fresh_copy(tmp_path)
    (clone / "tiny.yaml").write_text(yaml.safe_dump({"demo": TINY, "outdir": "results/tiny"}))
    r = _snakemake(clone, "--lint")
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, r.stdout + r.stderr
    r = _snakemake(clone, targets=["demo_cohort"])
    assert r.returncode == 0, r.stdout + r.stderr
    cohort = clone / "resources" / "demo" / "cohort"
    assert len(list((cohort / "slides").glob("DEMO-*-DX1.tif"))) == 12
    assert json.loads((cohort / "planted.json").read_text())["n_patients"] == 12
    r = _snakemake(clone, "-n")
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M))
    assert jobs.get("tile") == "12" and "demo_cohort" not in jobs
    # (extract and its input, the rule demo_encoder, are planned after the tiling checkpoint)
    assert {"tile_summary", "genomics", "cohort", "report", "demo_summary", "all"} <= set(jobs)
    r = _snakemake(clone, "-n", targets=["resources/demo/cohort/encoder.pth"])
    assert r.returncode == 0 and re.search(r"^demo_encoder\s+1$", r.stdout, re.M), r.stdout + r.stderr
    assert "../shared" not in (clone / "config" / "demo" / "config.yaml").read_text()


def _setup_copy(tmp_path: Path) -> Path:
    """scripts/setup.sh and pyproject.toml in a scratch folder whose .venv/bin/python is a
    stand-in that records what it is asked (and `cmta --version` answers)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    for name in ("python", "cmta"):
        (bin_ / name).write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{tmp_path}/calls.log"\n')
        (bin_ / name).chmod(0o755)
    return tmp_path


def test_setup_installs_once_and_again_when_its_inputs_change(tmp_path):
    """A second setup with the same pyproject.toml, pins and extras installs nothing (the
    demo's second run); the workflow extras are satisfied by a test install; changed
    dependencies (the control) install again, without upgrading pip or byte-compiling."""
    wd = _setup_copy(tmp_path)
    calls = wd / "calls.log"

    def setup(**env):
        calls.unlink(missing_ok=True)
        r = subprocess.run(["bash", "scripts/setup.sh"], cwd=wd, capture_output=True, text=True,
                           env={**os.environ, **env}, timeout=60)
        assert r.returncode == 0, r.stderr
        return [c for c in calls.read_text().splitlines() if "-m pip" in c] if calls.exists() else []

    first = setup()
    assert any("install -q --no-compile torch==" in c for c in first), first
    assert any('-e .[test]' in c for c in first) and not any("--upgrade pip" in c for c in first), first
    assert setup() == [] and setup(CMTA_EXTRAS="workflow") == []
    with open(wd / "pyproject.toml", "a") as f:
        f.write("\n# a dependency changed\n")
    assert any('-e .[workflow]' in c for c in setup(CMTA_EXTRAS="workflow"))
    assert setup(CMTA_EXTRAS="workflow") == []
