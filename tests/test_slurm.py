"""Cluster submission for real: the slide stage through the SLURM executor plugin.

Needs a running SLURM cluster (`bash scripts/local_slurm.sh install && bash
scripts/local_slurm.sh start` brings up a one-node one; .ci/run does). Skips otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmta_pipeline.synthetic import demo_specimen, write_synthetic_slide

REPO = Path(__file__).resolve().parents[1]


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return r.returncode == 0 and "idle" in r.stdout


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster (run scripts/local_slurm.sh start)"),
]


def test_tiling_runs_as_slurm_jobs(tmp_path):
    shapes, w, h = demo_specimen()
    (tmp_path / "slides").mkdir()
    write_synthetic_slide(tmp_path / "slides" / "TCGA-AA-0001-01Z-00-DX1.tif", shapes, w, h, 0.5)
    (tmp_path / "slides" / "TCGA-AA-0002-01Z-00-DX1.svs").write_bytes(b"not a slide")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(
        yaml.safe_dump({"outdir": "results", "slides": {"folder": "slides"}, "tiling": {"preset": "biopsy"}})
    )
    # the repository's profile, with what a cluster without accounting needs
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile.update({
        "slurm-status-command": "squeue",
        "slurm-no-account": True,
        "slurm-init-seconds-before-status-checks": 2,
        "latency-wait": 5,
        "default-resources": {"slurm_partition": "cpu", "mem_mb": 500, "runtime": 10},
    })
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", "profile"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "submitted with SLURM jobid" in log
    summary = pd.read_csv(tmp_path / "results" / "tiles" / "summary.tsv", sep="\t")
    assert dict(zip(summary.slide_id, summary.status)) == {
        "TCGA-AA-0001-01Z-00-DX1": "ok",
        "TCGA-AA-0002-01Z-00-DX1": "failed",
    }
