"""The Snakemake versions the workflow admits (pyproject: snakemake>=FLOOR, the Snakefile's
min_version): the Snakemake API it relies on is pinned here on the installed Snakemake, and
a two-cohort dry run runs under another installed Snakemake when one is named by
CMTA_OTHER_SNAKEMAKE (a venv folder or its python), e.g. one with the floor version:

    python3 -m venv /tmp/sm-low && /tmp/sm-low/bin/pip install 'snakemake==9.13.5' pandas pyyaml jsonschema
    CMTA_OTHER_SNAKEMAKE=/tmp/sm-low .venv/bin/python -m pytest tests/test_snakemake_versions.py
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"

# What the workflow calls of Snakemake beyond the documented Snakefile syntax, and the
# parameters it passes: (module, object, parameters). A module named by a variable (the
# cohorts, `module:` with `name:`) goes through Workflow.module(name=...) and the dynamic
# module lookup of Workflow.userule (Snakemake >= 9.0); get_path_or_uri(secret_free=False)
# is Snakemake >= 9.13.5.
API = [
    ("snakemake.workflow", "Workflow.module", {"name", "snakefile", "config"}),
    ("snakemake.workflow", "Workflow.userule", {"rules", "from_module", "name_modifier"}),
    ("snakemake.sourcecache", "LocalSourceFile.get_path_or_uri", {"secret_free"}),
    ("snakemake.sourcecache", "LocalGitFile.get_path_or_uri", {"secret_free"}),
    ("snakemake.sourcecache", "HostingProviderFile.get_path_or_uri", {"secret_free"}),
    ("snakemake.settings.types", "DeploymentMethod.CONDA", set()),
]


def missing_api(api=API) -> list[str]:
    """What of `api` the installed Snakemake lacks, one line each."""
    import importlib

    import snakemake.api  # noqa: F401  (imports snakemake.workflow without a cycle)

    missing = []
    for module, name, params in api:
        try:
            obj = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            missing.append(f"{module}.{name}: {e}")
            continue
        if params:
            have = set(inspect.signature(obj).parameters)
            if params - have:
                missing.append(f"{module}.{name} has no parameter {sorted(params - have)}")
    return missing


def floor() -> str:
    floors = set(re.findall(r'"snakemake([^"-]*)"', (REPO / "pyproject.toml").read_text()))
    assert len(floors) == 1, f"pyproject.toml: several snakemake requirements {floors}"
    (only,) = floors
    assert re.fullmatch(r">=[\d.]+", only), f"pyproject.toml: snakemake{only}, not >=<floor>"
    return only[2:]


def test_the_snakemake_api_the_workflow_uses_is_there():
    import snakemake

    missing = missing_api()
    assert not missing, (
        f"Snakemake {snakemake.__version__} changed what the workflow uses (Snakefile's cohort "
        f"modules, rules/common.smk): {'; '.join(missing)}. Adapt the workflow and run "
        "this file with CMTA_OTHER_SNAKEMAKE on the floor version.")
    # the control: the same check on a parameter and a name no Snakemake has
    assert missing_api([("snakemake.workflow", "Workflow.module", {"no_such_parameter"}),
                        ("snakemake.workflow", "Workflow.no_such_method", set())]) == [
        "snakemake.workflow.Workflow.module has no parameter ['no_such_parameter']",
        "snakemake.workflow.Workflow.no_such_method: type object 'Workflow' has no attribute "
        "'no_such_method'"]


def test_the_floor_is_one_version_everywhere_and_the_cohorts_use_the_public_syntax():
    import snakemake
    from packaging.version import Version

    text = SNAKEFILE.read_text()
    assert f'min_version("{floor()}")' in text
    assert Version(snakemake.__version__) >= Version(floor())
    # the cohort modules: Snakemake's `module` / `use rule`, not its internal calls
    assert "workflow.module(" not in text and "workflow.userule(" not in text
    assert re.search(r"^\s+use rule \* from _cohort_module as _cohort_prefix\*$", text, re.M)


def _python(given: str) -> Path:
    p = Path(given)
    return p / "bin" / "python" if p.is_dir() else p


@pytest.mark.skipif(not os.environ.get("CMTA_OTHER_SNAKEMAKE"),
                    reason="CMTA_OTHER_SNAKEMAKE (a venv with another Snakemake) not set")
def test_two_cohorts_plan_under_another_snakemake(tmp_path, tcga_dir):
    python = _python(os.environ["CMTA_OTHER_SNAKEMAKE"])
    version = subprocess.run([python, "-m", "snakemake", "--version"], capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0, version.stderr[-2000:]
    splits = tcga_dir / "splits" / "5foldcv"
    config = {
        "outdir": "results",
        "cohorts": {
            "blca": {"genomics": {"table": str(tcga_dir / "tcga_blca_all_clean.csv.gz")},
                     "cohort": {"splits": str(splits / "tcga_blca")}},
            "ucec": {"genomics": {"table": str(tcga_dir / "tcga_ucec_all_clean.csv.gz"),
                                  "unsuffixed": "mut"},
                     "cohort": {"splits": str(splits / "tcga_ucec")}},
        },
        "genomics": {"families": str(tcga_dir / "signatures.csv")},
        "training": {"models": ["snn", "coxnet"], "folds": [0], "epochs": 1, "threads": 1},
    }
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    r = subprocess.run([python, "-m", "snakemake", "-s", str(SNAKEFILE), "-n"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"Snakemake {version.stdout.strip()}: {out[-3000:]}"
    jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M)}
    assert jobs.get("blca_train") == 2 and jobs.get("ucec_train") == 2, out[-3000:]
    assert jobs.get("table1") == 1 and "results/ucec/train/coxnet/fold_0/summary.json" in out
