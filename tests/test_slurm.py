"""Cluster submission for real, through the SLURM executor plugin and the repository's profile.

Needs a running SLURM cluster (`bash scripts/local_slurm.sh install && bash
scripts/local_slurm.sh start` brings up a one-node one with a fake GPU; .ci/run does).
Skips otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmta_pipeline.slides.synthetic import demo_specimen, write_synthetic_slide

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


def _profile(tmp_path: Path) -> Path:
    """The repository's profile and partitions, with what a cluster without accounting needs."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile.update({
        "slurm-status-command": "squeue",
        "slurm-no-account": True,
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-partition-config": str(REPO / "profiles" / "slurm" / "partitions.yaml"),
        "latency-wait": 5,
        "default-resources": {"mem_mb": 500, "runtime": 10},
    })
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    return tmp_path / "profile"


def _run(tmp_path: Path, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
         "--profile", str(_profile(tmp_path)), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    return log


def _slurm_jobs(log: str) -> dict[str, list[str]]:
    """rule -> SLURM job records (`scontrol show job`) of the jobs Snakemake submitted."""
    jobs: dict[str, list[str]] = {}
    for jobid, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", log):
        record = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
        assert f"JobId={jobid}" in record, f"SLURM has no record of job {jobid} ({rule})"
        jobs.setdefault(rule, []).append(record)
    return jobs


# Four BLCA patients with events at different times: two folds of two, so that each fold
# trains on two events (two survival bins) and holds out a comparable pair for the c-index.
# And a file that is not a slide.
PATIENTS = ["TCGA-ZF-AA4N", "TCGA-BL-A13I", "TCGA-CU-A0YN", "TCGA-G2-A3IE"]


@pytest.mark.slow
def test_whole_chain_as_slurm_jobs_with_gpus_by_rule(tmp_path, tcga_dir):
    """The whole chain under SLURM with default devices (about 3 minutes: every job is an
    sbatch). SLURM's own job records show one GPU (gres gpu:1) and the gpu partition for
    extract and CMTA's training, and no GPU and the cpu partition for every other rule; a
    slide that cannot be tiled is listed and the run completes."""
    shapes, w, h = demo_specimen()
    (tmp_path / "slides").mkdir()
    for i, case in enumerate(PATIENTS):
        write_synthetic_slide(tmp_path / "slides" / f"{case}-01Z-00-DX1.tif", shapes[:1], w, h, 0.5, seed=i)
    (tmp_path / "slides" / "TCGA-AA-0002-01Z-00-DX1.svs").write_bytes(b"not a slide")
    config = {
        "outdir": "results",
        "slides": {"folder": "slides"},
        "tiling": {"preset": "biopsy"},
        "features": {"weights": "random", "input_px": 32, "workers": 0, "threads": 1, "gpu_threads": 1,
                     "mem_mb": 1500},
        "genomics": {"table": str(tcga_dir / "tcga_blca_all_clean.csv.gz"),
                     "families": str(tcga_dir / "signatures.csv")},
        "cohort": {"n_folds": 2, "n_bins": 2},
        "training": {"models": ["cmta"], "folds": [0], "epochs": 1, "threads": 1, "mem_mb": 1500},
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    log = _run(tmp_path)
    assert (tmp_path / "results" / "report" / "cindex_summary.tsv").is_file()
    summary = pd.read_csv(tmp_path / "results" / "tiles" / "summary.tsv", sep="\t")
    status = dict(zip(summary.slide_id, summary.status))
    assert status.pop("TCGA-AA-0002-01Z-00-DX1") == "failed"
    assert set(status.values()) == {"ok"} and len(status) == len(PATIENTS)

    jobs = _slurm_jobs(log)
    assert {"tile", "tile_summary", "extract", "genomics", "cohort", "train", "report"} <= set(jobs), sorted(jobs)
    for rule, records in jobs.items():
        for record in records:
            gpu = re.search(r"gres[/:]gpu[:=]1", record) is not None
            partition = re.search(r"Partition=(\S+)", record).group(1)
            if rule in ("extract", "train"):
                assert gpu and partition == "gpu", f"{rule} job without a GPU:\n{record}"
            else:
                assert not gpu and partition == "cpu", f"{rule} job with a GPU:\n{record}"
