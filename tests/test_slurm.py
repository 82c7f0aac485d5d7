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


def _node_mem_mb() -> int:
    """RealMemory of the cluster's node (the ceiling a job may ask for)."""
    r = subprocess.run(["scontrol", "show", "node"], capture_output=True, text=True)
    return int(re.search(r"RealMemory=(\d+)", r.stdout).group(1))


def _run(tmp_path: Path, *args: str, ok: bool = True) -> str:
    """snakemake with the repository's profile as it is, from tmp_path (not the repository:
    the profile finds its partitions.yaml from any folder), plus what a cluster without
    accounting needs and ceilings at this node's memory."""
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
         "--profile", str(REPO / "profiles" / "slurm"),
         "--slurm-status-command", "squeue", "--slurm-no-account",
         "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5",
         "--default-resources", "mem_mb=500", "runtime=10",
         "--resources", f"mem_mb={_node_mem_mb()}", "runtime=1440", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    log = r.stdout + r.stderr
    assert (r.returncode == 0) == ok, log[-4000:]
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
    """The whole chain under SLURM with gpu: true (about 3 minutes: every job is an sbatch).
    SLURM's own job records show one GPU (gres gpu:1) and the gpu partition for the encoder
    jobs and CMTA's training, and no GPU and the cpu partition for every other rule; the
    summaries and `extract` run locally; no job asks for more memory than the node has; a
    slide that cannot be tiled is listed and the run completes."""
    shapes, w, h = demo_specimen()
    (tmp_path / "slides").mkdir()
    for i, case in enumerate(PATIENTS):
        write_synthetic_slide(tmp_path / "slides" / f"{case}-01Z-00-DX1.tif", shapes[:1], w, h, 0.5, seed=i)
    (tmp_path / "slides" / "TCGA-AA-0002-01Z-00-DX1.svs").write_bytes(b"not a slide")
    config = {
        "outdir": "results",
        "gpu": True,
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
    assert {"tile", "encode", "genomics", "cohort", "train"} <= set(jobs), sorted(jobs)
    assert sum("coxnet" in r for r in jobs["train"]) == 1 and len(jobs["train"]) == 2
    assert not {"tile_summary", "extract", "report"} & set(jobs), sorted(jobs)  # local rules
    for rule, records in jobs.items():
        for record in records:
            gpu = re.search(r"gres[/:]gpu[:=]1", record) is not None
            partition = re.search(r"Partition=(\S+)", record).group(1)
            mem = int(re.search(r"MinMemoryNode=(\d+)M", record).group(1))
            assert mem <= _node_mem_mb(), record
            # the coxnet floor (table1.floor) trains on genomics alone: no GPU, like genomics
            if rule == "encode" or (rule == "train" and "coxnet" not in record):
                assert gpu and partition == "gpu", f"{rule} job without a GPU:\n{record}"
            else:
                assert not gpu and partition == "cpu", f"{rule} job with a GPU:\n{record}"


@pytest.mark.slow
def test_a_failed_job_is_retried_with_more_memory_and_time_within_the_ceiling(tmp_path):
    """A tile job that fails (a file that is not a slide, slides.on_error: fail) is
    resubmitted once (the profile's retries: 1) with twice its runtime (a job ended by
    TIMEOUT gets more time) and twice its memory, capped by the run's ceiling
    (--resources mem_mb=3000: the profile's ceilings stand for the partitions' limits)."""
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "TCGA-AA-0002-01Z-00-DX1.svs").write_bytes(b"not a slide")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(
        {"outdir": "results", "slides": {"folder": "slides", "on_error": "fail"}}))
    log = _run(tmp_path, "--resources", "mem_mb=3000", "runtime=1440",
               "--", "results/tiles/TCGA-AA-0002-01Z-00-DX1.tile.json", ok=False)
    records = _slurm_jobs(log)["tile"]
    assert len(records) == 2, log[-3000:]
    limits = [(re.search(r"TimeLimit=(\S+)", r).group(1), re.search(r"MinMemoryNode=(\d+)M", r).group(1))
              for r in records]
    assert limits == [("00:30:00", "2000"), ("01:00:00", "3000")], limits
