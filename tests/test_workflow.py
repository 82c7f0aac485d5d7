"""The Snakemake workflow: lint, dry run, config validation, a cohort with bad slides, envs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

from cmta_pipeline.slides.synthetic import demo_specimen, write_synthetic_slide

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


def _two_slides_and_a_corrupt_one(slides):
    """TCGA-AA-0001/0002 synthetic slides and TCGA-AA-0003, a .svs that is not a slide."""
    shapes, w, h = demo_specimen()
    slides.mkdir()
    write_synthetic_slide(slides / "TCGA-AA-0001-01Z-00-DX1.tif", shapes, w, h, 0.5)
    write_synthetic_slide(slides / "TCGA-AA-0002-01Z-00-DX1.tif", shapes[:1], w, h, 0.5, seed=1)
    (slides / "TCGA-AA-0003-01Z-00-DX1.svs").write_bytes(b"corrupt" * 1000)


@pytest.mark.slow
def test_cohort_with_bad_slides_completes_and_lists_them(tmp_path):
    _two_slides_and_a_corrupt_one(tmp_path / "slides")
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
    tiles = wd / "results/tiles"
    assert (tiles / "TCGA-AA-0001-01Z-00-DX1/TCGA-AA-0001-01Z-00-DX1.coords.h5").is_file()
    assert (tiles / "TCGA-AA-0001-01Z-00-DX1/TCGA-AA-0001-01Z-00-DX1.qc.png").is_file()
    assert (tiles / "TCGA-AA-0001-01Z-00-DX1/TCGA-AA-0001-01Z-00-DX1.qc.jpg").is_file()
    # a failed slide writes nothing (Snakemake stamps the folder it created)
    assert not [p.name for p in (tiles / "TCGA-AA-0003-01Z-00-DX1").iterdir() if p.name != ".snakemake_timestamp"]

    # with on_error: fail the same cohort stops with an error
    config["slides"]["on_error"] = "fail"
    config["outdir"] = "results_fail"
    wd = _workdir(tmp_path, config)
    r = snakemake("--cores", "2", "--directory", str(wd))
    assert r.returncode != 0



@pytest.mark.slow
def test_several_slides_per_extract_job(tmp_path):
    """features.slides_per_job: 3 slides, one of them not a slide, in one encoder job (one
    process): the two good slides get their features, the bad one empty files marked failed
    (the job needs every output it declares), and the cohort's features are the good two,
    each published by its own `extract` job; nothing is left in features/encoded/."""
    _two_slides_and_a_corrupt_one(tmp_path / "slides")
    config = {"outdir": "results", "slides": {"folder": "slides", "on_error": "skip"},
              "tiling": {"preset": "biopsy"},
              "features": {"weights": "random", "input_px": 32, "workers": 0, "threads": 1,
                           "slides_per_job": 3}}
    wd = _workdir(tmp_path, config)
    r = snakemake("--cores", "2", "--directory", str(wd), "features")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("rule encode_batch_0:") == 1 and "rule encode:" not in r.stderr
    assert r.stderr.count("rule extract:") == 2
    feats = wd / "results/features"
    for case in ("0001", "0002"):
        with h5py.File(feats / f"TCGA-AA-{case}-01Z-00-DX1.features.h5") as f:
            assert f["features"].shape[0] > 0 and f["features"].shape[1] == 1024
    # the failed slide's files were written by the encoder job but nothing asks for them
    assert not (feats / "TCGA-AA-0003-01Z-00-DX1.features.h5").exists()
    assert not (feats / "encoded").exists() or not list((feats / "encoded").iterdir())
    log = (wd / "results/logs/encode/batch_0.log").read_text()
    assert "slide 3 of 3 done" in log and "tiling failed" in log

    # a changed feature setting reruns the extraction (recorded on the published files;
    # tests/test_reruns.py goes through every setting)
    r = snakemake("-n", "--directory", str(wd), "features")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]
    config["features"]["input_px"] = 48
    (wd / "changed.yaml").write_text(yaml.safe_dump(config))
    r = snakemake("-n", "--directory", str(wd), "features", "--configfile",
                  str(wd / "changed.yaml"))
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "rule encode_batch_0:" in out, out[-3000:]
    assert "Params have changed since last execution" in out and "--input-px 48" in out


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


def _env_functions() -> dict[str, list[str]]:
    """Env function (extract_env) -> the envs its body names, from rules/functions/."""
    found = {}
    for smk in (REPO / "workflow" / "rules" / "functions").glob("*.smk"):
        for name, body in re.findall(r"^def (\w+)\(.*?\n((?:[ \n].*\n)*)", smk.read_text(), re.M):
            envs = re.findall(r'env_file\("([\w-]+)"\)', body)
            if envs:
                found[name] = envs
    return found


def _rules():
    """(rule name, env names, cmta command) for every rule of the workflow (indented ones,
    as the encoder rules, too)."""
    from cmta_pipeline.cli import COMMANDS

    env_functions = _env_functions()
    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=\s*(?:rule|checkpoint)\b[ \w]*:)", text):
            m = re.match(r"\s*(?:rule|checkpoint) ?(\w*):(?:\s*name:\s*f?\"(\w+))?", block)
            if not m:
                continue
            conda = re.search(r"conda:\s*\n\s*(.*)", block)
            envs = re.findall(r'env_file\("([\w-]+)"\)', conda.group(1)) if conda else []
            if conda and not envs:
                called = re.match(r"(\w+)\(\)", conda.group(1))
                envs = env_functions.get(called.group(1), []) if called else []
            cmd = re.search(r'(?:\{params\.cmta\}|\{CMTA\})\s+([a-z][a-z-]*)', block)
            if cmd and cmd.group(1) in COMMANDS:
                found.append((m.group(1) or m.group(2), envs, cmd.group(1)))
    return found


def test_every_rule_env_lists_its_imports():
    from cmta_pipeline.cli import COMMANDS

    rules = _rules()
    assert any(r[0] == "tile" for r in rules)
    assert {"torch", "torch-cuda"} <= {env for r in rules if r[0] == "train" for env in r[1]}
    encoders = {r[0]: set(r[1]) for r in rules if r[2] == "extract"}
    assert encoders == {"encode": {"torch", "torch-cuda"}, "encode_batch_": {"torch", "torch-cuda"}}
    for rule, envs, command in rules:
        assert envs, f"rule {rule} has no conda env"
        for env in envs:
            env_path = REPO / "workflow" / "envs" / f"{env}.yaml"
            assert env_path.is_file(), f"rule {rule}: {env_path} missing"
            needed = _third_party_imports(f"cmta_pipeline.{COMMANDS[command]}.cli", set())
            missing = needed - _env_packages(env_path)
            assert not missing, f"rule {rule} (cmta {command}) imports {sorted(missing)} not in {env_path.name}"


# ---- formatting, defaults, GPU requests, the report, use as a module ----------------------


def test_rules_are_snakefmt_formatted():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    if not snakefmt.exists():
        pytest.skip("snakefmt not installed (pip install -e '.[test]')")
    r = subprocess.run([str(snakefmt), "--check", str(REPO / "workflow")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _default_mismatches(schema: dict, shown: dict, path: tuple = ()) -> list[str]:
    """Where ``shown`` (a config) does not show a key the schema has a default for, or shows
    another value. A section without a default (demo) is optional."""
    out = []
    for key, sub in schema["properties"].items():
        where = ".".join(path + (key,))
        if "default" not in sub:
            continue
        if key not in shown:
            out.append(f"{where} not shown (default {sub['default']!r})")
        elif sub.get("type") == "object" and "properties" in sub:
            out += _default_mismatches(sub, shown[key] or {}, path + (key,))
        elif shown[key] != sub["default"] or type(shown[key]) is not type(sub["default"]):
            out.append(f"{where} = {shown[key]!r}, schema default {sub['default']!r}")
    return out


def test_config_yaml_shows_the_schema_defaults():
    """config/config.yaml shows every key the schema has a default for, with that value,
    null defaults included: the schema is the one source of defaults, and a run of the
    workflow as a module (no config/config.yaml: Snakemake fills the schema's defaults)
    behaves as a plain run with config/config.yaml (training.models is [cmta] in both)."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert _default_mismatches(schema, config) == []
    # negative controls through the same check: the module trap of 0.1 (schema [], file
    # [cmta]), a key left out, a false where the default is 0
    trap = {**config, "training": {**config["training"], "models": []}}
    assert _default_mismatches(schema, trap) == ["training.models = [], schema default ['cmta']"]
    missing = {k: v for k, v in config.items() if k != "gpu_model"}
    assert _default_mismatches(schema, missing) == ["gpu_model not shown (default None)"]
    typed = {**config, "cohort": {**config["cohort"], "inner_val_fraction": 0}}
    assert _default_mismatches(schema, typed) == ["cohort.inner_val_fraction = 0, schema default 0.0"]


def _planned_jobs(output: str) -> list[tuple[str, dict, str]]:
    """(rule, wildcards, resources line) of every job of a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", output):
        rule = re.search(r"^(?:local)?(?:rule|checkpoint) (\w+):", block, re.M)
        if not rule:
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        jobs.append((rule.group(1), wildcards, res.group(1) if res else ""))
    return jobs


def _synthetic_slides(folder: Path, cases: list[str]) -> None:
    shapes, w, h = demo_specimen()
    folder.mkdir(parents=True)
    for i, case in enumerate(cases):
        write_synthetic_slide(folder / f"{case}-01Z-00-DX1.tif", shapes[:1], w, h, 0.5, seed=i)


@pytest.mark.slow
def test_report_has_figures_and_gpus_go_to_slide_models(tmp_path, tcga_dir):
    """A small real run (two tiny slides, a genomics-only model on BLCA, one fold, one epoch)
    and its `snakemake --report`: the workflow description, each slide's QC picture, the
    tiling and failed-slides tables, the cohort audit, the c-index tables and the
    Kaplan-Meier figure. Then a dry run of the same cohort with CMTA: with gpu: true the
    encoder jobs and CMTA's training ask for one GPU, nothing else does; gpu: false asks for
    none."""
    cases = ["TCGA-ZF-AA4N", "TCGA-BL-A13I"]
    _synthetic_slides(tmp_path / "slides", cases)
    config = {
        "outdir": "results",
        "slides": {"folder": "slides"},
        "tiling": {"preset": "biopsy"},
        "features": {"weights": "random", "input_px": 32, "workers": 0, "threads": 1},
        "genomics": {"table": str(tcga_dir / "tcga_blca_all_clean.csv.gz"),
                     "families": str(tcga_dir / "signatures.csv")},
        "cohort": {"n_folds": 2, "with_slides": False},
        "training": {"models": ["snn"], "folds": [0], "epochs": 1, "threads": 1},
    }
    wd = _workdir(tmp_path, config)
    r = snakemake("--cores", "2", "--directory", str(wd))
    assert r.returncode == 0, r.stderr[-3000:]
    r = snakemake("--directory", str(wd), "--report", "report.html")
    assert r.returncode == 0, r.stderr[-3000:]
    page = (wd / "report.html").read_text()
    assert "Survival risk from whole-slide images and genomics with CMTA" in page  # workflow.rst
    for name in [f"{c}-01Z-00-DX1.qc.jpg" for c in cases] + [
        "summary.tsv", "failed_slides.tsv", "audit.tsv", "families.tsv",
        "cindex_summary.tsv", "cindex.tsv", "km_snn.png", "metrics.tsv", "metrics_summary.tsv",
        "cindex_per_fold.png", "summary.md",
    ]:
        assert name in page, f"{name} not in the Snakemake report"
    # each slide's QC picture is embedded as its small JPEG, never as the full-size PNG
    embedded = re.findall(r"data:image/(\w+);charset=utf8;filename=([^;]+\.qc\.\w+);base64,([^\"]+)", page)
    assert sorted((kind, name) for kind, name, _ in embedded) == sorted(
        ("jpeg", f"{c}-01Z-00-DX1.qc.jpg") for c in cases), [e[:2] for e in embedded]
    assert all(len(data) * 3 / 4 < 100_000 for _, _, data in embedded)
    assert "Kaplan-Meier curves of the high- and low-risk patients" in page  # a caption

    # training speed settings rerun nothing
    (wd / "faster.yaml").write_text(yaml.safe_dump(
        {**config, "training": {**config["training"], "threads": 2, "cache_bags": True}}))
    r = snakemake("-n", "--directory", str(wd), "--configfile", str(wd / "faster.yaml"))
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]
    # a changed training setting reruns the training (and what reads it), nothing before it
    (wd / "longer.yaml").write_text(yaml.safe_dump(
        {**config, "training": {**config["training"], "epochs": 2}}))
    r = snakemake("-n", "--directory", str(wd), "--configfile", str(wd / "longer.yaml"))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    ran = {rule for rule, w, res in _planned_jobs(out)}
    assert "train" in ran and "report" in ran and not ran & {"genomics", "cohort", "tile"}, ran
    assert "Params have changed since last execution" in out and "--epochs 2" in out

    # the same cohort with CMTA on the slides: which jobs ask for a GPU
    config["cohort"]["with_slides"] = True
    config["training"]["models"] = ["cmta", "snn"]
    for gpu in (True, False):
        (wd / "plan.yaml").write_text(yaml.safe_dump({**config, "gpu": gpu}))
        r = snakemake("-n", "--directory", str(wd), "--configfile", str(wd / "plan.yaml"))
        assert r.returncode == 0, r.stderr[-3000:]
        jobs = _planned_jobs(r.stdout + r.stderr)
        assert {("encode", None), ("extract", None), ("train", "cmta"), ("train", "snn"),
                ("cohort", None)} <= {(rule, w.get("run")) for rule, w, res in jobs}, jobs
        gpu_jobs = {(rule, w.get("run")) for rule, w, res in jobs if "gpu=1" in res}
        assert gpu_jobs == ({("encode", None), ("train", "cmta")} if gpu else set()), jobs


@pytest.mark.slow
def test_slide_stage_runs_through_a_consumer_workflow_using_this_one_as_a_module(tmp_path):
    """A workflow elsewhere, with its own config, uses this one as a Snakemake module: the
    slide stage and the features run for real, from this workflow's own files (no
    PYTHONPATH), and the default gpu: 1 request does not stall a local run."""
    _synthetic_slides(tmp_path / "data", ["TCGA-AA-0001"])
    (tmp_path / "Snakefile").write_text(
        'configfile: "my_config.yaml"\n\n\n'
        "module cmta:\n"
        f"    snakefile:\n        {str(SNAKEFILE)!r}\n"
        "    config:\n        config\n\n\n"
        "use rule * from cmta as cmta_*\n"
    )
    (tmp_path / "my_config.yaml").write_text(yaml.safe_dump({
        "outdir": "out",
        "slides": {"folder": "data"},
        "tiling": {"preset": "biopsy"},
        "features": {"weights": "random", "input_px": 32, "workers": 0, "threads": 1},
    }))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "-p", "cmta_all", "cmta_features"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PYTHONPATH" not in r.stdout + r.stderr
    slide = "TCGA-AA-0001-01Z-00-DX1"
    assert (tmp_path / f"out/tiles/{slide}/{slide}.coords.h5").is_file()
    assert (tmp_path / f"out/tiles/{slide}/{slide}.qc.png").is_file()
    assert (tmp_path / f"out/features/{slide}.features.h5").is_file()
    assert not (tmp_path / "envs").exists() and not (tmp_path / "results").exists()


def test_protocol_paper_and_recipes_reach_the_commands_and_defaults_keep_theirs(tmp_path, tcga_dir):
    """A dry run: protocol paper gives the cohort --keep-constant and the training --no-amp
    (fp32) and --protocol paper; training.recipes {snn: reference} gives snn alone
    --recipe reference. The default plans none of these flags (commands unchanged)."""
    base = {
        "outdir": "results",
        "genomics": {"table": str(tcga_dir / "tcga_blca_all_clean.csv.gz"),
                     "families": str(tcga_dir / "signatures.csv")},
        "cohort": {"n_folds": 2, "with_slides": False},
        "training": {"models": ["snn", "mcat_omic"], "folds": [0], "epochs": 1},
    }
    flags = ("--keep-constant", "--no-amp", "--protocol paper", "--recipe reference")
    wd = _workdir(tmp_path / "default", base)
    r = snakemake("-n", "-p", "--directory", str(wd))
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [f for f in flags if f in r.stdout], r.stdout[-3000:]
    paper = {**base, "protocol": "paper",
             "training": {**base["training"], "recipes": {"snn": "reference"}}}
    wd = _workdir(tmp_path / "paper", paper)
    r = snakemake("-n", "-p", "--directory", str(wd))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    shell = [line for line in r.stdout.splitlines() if " cohort " in line or " train " in line]
    cohort = next(line for line in shell if " cohort " in line)
    assert "--keep-constant" in cohort and "--labels-from all" in cohort
    train = {m: next(line for line in shell if f"--model {m} " in line) for m in ("snn", "mcat_omic")}
    for m, line in train.items():
        assert "--no-amp" in line and "--protocol paper" in line and "--selection best_heldout" in line
        assert ("--recipe reference" in line) == (m == "snn"), line
    bad = {**paper, "training": {**base["training"], "recipes": {"nonsense": "reference"}}}
    r = snakemake("-n", "--directory", str(_workdir(tmp_path / "bad", bad)))
    assert r.returncode != 0 and "nonsense" in r.stdout + r.stderr


@pytest.mark.slow
def test_cmta_trains_on_features_of_another_encoder(tmp_path, tcga_dir):
    """features.encoder: ctranspath (a Swin, 768-d, 256 um patches shown at 224 px: 256 px
    at 10x as TRIDENT runs it, random weights): the slides are tiled with its geometry
    (tiles_fov256um_in224/), its features
    written to features/ctranspath/, and CMTA trains on them (one fold, one epoch) with
    path_dim 768, its checkpoint naming the encoder."""
    import torch

    cases = ["TCGA-ZF-AA4N", "TCGA-BL-A13I", "TCGA-CU-A0YN", "TCGA-G2-A3IE"]
    _synthetic_slides(tmp_path / "slides", cases)
    config = {
        "outdir": "results",
        "slides": {"folder": "slides"},
        "tiling": {"preset": "biopsy"},
        "features": {"encoder": "ctranspath", "weights": "random", "workers": 0,
                     "threads": 1},
        "genomics": {"table": str(tcga_dir / "tcga_blca_all_clean.csv.gz"),
                     "families": str(tcga_dir / "signatures.csv")},
        "cohort": {"n_folds": 2, "n_bins": 2},
        "training": {"models": ["cmta"], "folds": [0], "epochs": 1, "threads": 1},
    }
    wd = _workdir(tmp_path, config)
    r = snakemake("--cores", "2", "--directory", str(wd))
    assert r.returncode == 0, r.stderr[-3000:]
    out = wd / "results"
    assert not (out / "tiles").exists()  # resnet50's tiles are not made
    coords = out / f"tiles_fov256um_in224/{cases[0]}-01Z-00-DX1/{cases[0]}-01Z-00-DX1.coords.h5"
    with h5py.File(coords) as f:
        assert f["coords"].attrs["patch_size_level0"] == 512  # 256 um at 0.5 um/px
    with h5py.File(out / f"features/ctranspath/{cases[0]}-01Z-00-DX1.features.h5") as f:
        assert f["features"].shape[1] == 768 and f.attrs["encoder"] == "ctranspath"
    ckpt = torch.load(out / "train/cmta/fold_0/model.pt", weights_only=True)
    assert ckpt["model"]["path_dim"] == 768 and ckpt["model"]["encoder"] == "ctranspath"
