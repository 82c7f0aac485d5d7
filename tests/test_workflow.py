"""The Snakemake workflow: lint, dry run, config validation, a cohort with bad slides, envs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmta_pipeline.synthetic import demo_specimen, write_synthetic_slide

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"


def snakemake(*args, cwd=REPO, timeout=600):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_lint_is_clean():
    """Lint on the demo config, which needs nothing outside the repository."""
    r = snakemake("--lint", "--configfile", "config/demo/config.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Lints for" not in r.stdout + r.stderr


def test_demo_plans_every_stage_from_its_own_inputs(tmp_path):
    """The demo config plans the whole chain, from generating its cohort to the report, with
    nothing outside the repository (tests/test_demo.py runs it on a fresh copy)."""
    r = snakemake("-n", "--configfile", "config/demo/config.yaml", "--config", f"outdir={tmp_path}/results")
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M))
    # after the tiling checkpoint the DAG grows by features; whether demo_cohort and
    # demo_encoder are planned depends on resources/demo/cohort/ (tests/test_demo.py
    # checks them on a fresh copy)
    assert int(jobs.get("tile", 0)) >= 100
    assert {"tile_summary", "genomics", "cohort", "train", "report", "demo_summary", "all"} <= set(jobs)


def test_dry_run_shared_slides(shared_data, tmp_path):
    r = snakemake("-n", "--configfile", "config/examples/shared_slides.yaml", "--config", f"outdir={tmp_path}/results")
    assert r.returncode == 0, r.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M))
    assert jobs["tile"] == "4" and jobs["tile_summary"] == "1"


def _workdir(tmp_path, config: dict, sheet: pd.DataFrame | None = None) -> Path:
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    if sheet is not None:
        sheet.to_csv(tmp_path / "config" / "slides.tsv", sep="\t", index=False)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_config_typo_fails_fast_naming_the_key(tmp_path):
    sheet = pd.DataFrame(columns=["slide_id", "case_id", "path"])
    wd = _workdir(tmp_path, {"outdir": "results", "slides": {"sheet": "config/slides.tsv"}, "tilling": {}}, sheet)
    t0 = time.time()
    r = snakemake("-n", "--directory", str(wd))
    assert r.returncode != 0
    assert "tilling" in r.stdout + r.stderr
    assert time.time() - t0 < 60

    wd = _workdir(tmp_path, {"outdir": "results", "slides": {"sheet": "config/slides.tsv"}, "tiling": {"patch_sise_px": 256}})
    r = snakemake("-n", "--directory", str(wd))
    assert r.returncode != 0 and "patch_sise_px" in r.stdout + r.stderr


def test_sheet_missing_column_is_named(tmp_path):
    sheet = pd.DataFrame({"slide_id": ["a"], "path": ["a.svs"]})
    wd = _workdir(tmp_path, {"outdir": "results", "slides": {"sheet": "config/slides.tsv"}}, sheet)
    r = snakemake("-n", "--directory", str(wd))
    assert r.returncode != 0
    assert "slides.tsv: missing column(s) case_id" in r.stdout + r.stderr


@pytest.mark.slow
def test_cohort_with_bad_slides_completes_and_lists_them(tmp_path):
    shapes, w, h = demo_specimen()
    slides = tmp_path / "slides"
    slides.mkdir()
    write_synthetic_slide(slides / "TCGA-AA-0001-01Z-00-DX1.tif", shapes, w, h, 0.5)
    write_synthetic_slide(slides / "TCGA-AA-0002-01Z-00-DX1.tif", shapes[:1], w, h, 0.5, seed=1)
    (slides / "TCGA-AA-0003-01Z-00-DX1.svs").write_bytes(b"corrupt" * 1000)
    config = {"outdir": "results", "slides": {"folder": "slides", "on_error": "skip"}, "tiling": {"preset": "biopsy"}}
    wd = _workdir(tmp_path, config)
    r = snakemake("--cores", "2", "--directory", str(wd))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = pd.read_csv(wd / "results/tiles/summary.tsv", sep="\t")
    status = dict(zip(summary.slide_id, summary.status))
    assert status == {
        "TCGA-AA-0001-01Z-00-DX1": "ok",
        "TCGA-AA-0002-01Z-00-DX1": "ok",
        "TCGA-AA-0003-01Z-00-DX1": "failed",
    }
    assert set(summary.case_id) == {"TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"}
    failed = pd.read_csv(wd / "results/tiles/failed_slides.tsv", sep="\t")
    assert list(failed.slide_id) == ["TCGA-AA-0003-01Z-00-DX1"]
    assert "TCGA-AA-0003-01Z-00-DX1.svs" in failed.reason[0]
    assert (wd / "results/tiles/TCGA-AA-0001-01Z-00-DX1.coords.h5").is_file()
    assert not (wd / "results/tiles/TCGA-AA-0003-01Z-00-DX1.coords.h5").exists()

    # with on_error: fail the same cohort stops with an error
    config["slides"]["on_error"] = "fail"
    config["outdir"] = "results_fail"
    wd = _workdir(tmp_path, config)
    r = snakemake("--cores", "2", "--directory", str(wd))
    assert r.returncode != 0


# ---- conda envs list what the rule code imports -----------------------------------------

IMPORT_TO_CONDA = {
    "cv2": "opencv",
    "openslide": "openslide-python",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "sksurv": "scikit-survival",
    "yaml": "pyyaml",
    "torch": "pytorch",
    "matplotlib": "matplotlib-base",  # conda-forge's matplotlib without a GUI toolkit
}


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _third_party_imports(module: str, seen: set[str]) -> set[str]:
    """Top-level third-party packages imported (anywhere) by a module and the
    cmta_pipeline modules it imports, transitively."""
    if module in seen:
        return set()
    seen.add(module)
    path = _module_file(module)
    if path is None:
        return set()
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top == "cmta_pipeline":
                found |= _third_party_imports(name, seen)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.add(IMPORT_TO_CONDA.get(top, top))
    return found


def _env_packages(env_path: Path) -> set[str]:
    spec = yaml.safe_load(env_path.read_text())
    names = set()
    for dep in spec.get("dependencies", []):
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            names.add(re.split(r"[\s=<>!\[]", entry.strip(), maxsplit=1)[0].lower())
    return names


def _rules():
    """(rule name, env name, cmta command) for every rule of the workflow."""
    from cmta_pipeline.cli import COMMANDS

    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=(?:rule|checkpoint) \w+:)", text):
            m = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if not m:
                continue
            env = re.search(r'env_file\("(\w+)"\)', block)
            cmd = re.search(r'(?:\{params\.cmta\}|\{CMTA\})\s+([a-z][a-z-]*)', block)
            if cmd and cmd.group(1) in COMMANDS:
                found.append((m.group(1), env.group(1) if env else None, cmd.group(1)))
    return found


def test_every_rule_env_lists_its_imports():
    from cmta_pipeline.cli import COMMANDS

    rules = _rules()
    assert any(r[0] == "tile" for r in rules)
    for rule, env, command in rules:
        assert env is not None, f"rule {rule} has no conda env"
        env_path = REPO / "envs" / f"{env}.yaml"
        assert env_path.is_file(), f"rule {rule}: {env_path} missing"
        needed = _third_party_imports(f"cmta_pipeline.commands.{COMMANDS[command]}", set())
        missing = needed - _env_packages(env_path)
        assert not missing, f"rule {rule} (cmta {command}) imports {sorted(missing)} not in {env_path.name}"
