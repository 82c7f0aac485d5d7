"""The workflow deployed as its users deploy it (issue 20): a module from a git source, a
conda prefix shared by checkouts of other versions, a CPU-only --use-conda run, --config
from the command line, planning without torch or OpenCV, the SLURM profile from any folder.
Each is a real Snakemake run or dry run; `conda` is a stand-in (conda is not installed
here) that answers Snakemake's questions and records them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
DEMO = ["--configfile", str(REPO / "config" / "demo" / "config.yaml")]


def snakemake(*args, cwd, env=None, timeout=600):
    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def working_tree(dest: Path) -> Path:
    """A copy of this checkout's files as they are now (committed or not, ignored ones left
    out), so that a test can commit them to a scratch repository or edit them."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       cwd=REPO, capture_output=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    for rel in r.stdout.decode().split("\0"):
        if rel and (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def git(*args, cwd):
    r = subprocess.run(["git", "-c", "user.email=test@example.org", "-c", "user.name=test",
                        *args], cwd=cwd, capture_output=True, text=True, check=True)
    return r.stdout.strip()


def scratch_repository(dest: Path) -> str:
    """This checkout's files committed (and tagged v0.2.0) in a new repository; its commit."""
    working_tree(dest)
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "scratch", cwd=dest)
    git("tag", "v0.2.0", cwd=dest)
    return git("rev-parse", "HEAD", cwd=dest)


def stand_in_conda(folder: Path) -> dict:
    """A `conda` on PATH that answers what Snakemake asks before it creates an env."""
    (folder / "bin").mkdir(parents=True)
    conda = folder / "bin" / "conda"
    conda.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        echo "conda $*" >> {folder}/calls.log
        case "$1 $2" in
          "info --json") echo '{{"conda_prefix": "{folder}", "platform": "linux-64", "conda_version": "24.11.3"}}';;
          "--version "*) echo "conda 24.11.3";;
          "config --get") echo '{{"get": {{"channel_priority": "strict"}}, "rc_path": "", "success": true, "warnings": []}}';;
          *) echo "stand-in conda: not supported: $*" >&2; exit 1;;
        esac
        """))
    conda.chmod(0o755)
    return {"PATH": f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def conda_envs(output: str) -> dict[str, str]:
    """env file name (slides, torch, ...) -> its env folder, from --list-conda-envs."""
    return {Path(yml).stem: loc for yml, loc in
            re.findall(r"^(\S+\.yaml)\t\S*\t(\S+)$", output, re.M)}


def demo_folder(path: Path) -> Path:
    """A working folder for the demo config (its paths are relative: resources/demo/...)."""
    (path / "resources" / "demo").mkdir(parents=True)
    shutil.copy(REPO / "resources" / "demo" / "families.csv", path / "resources" / "demo")
    return path


def tiny_slides(folder: Path, names: list[str]) -> None:
    from cmta_pipeline.slides.synthetic import demo_specimen, write_synthetic_slide

    shapes, w, h = demo_specimen()
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        write_synthetic_slide(folder / f"{name}.tif", shapes[:1], w, h, 0.5, seed=i)


# ---- a module from git -------------------------------------------------------------------


CONSUMER = """\
configfile: "my_config.yaml"


module cmta:
    snakefile:
        {source}
    config:
        config


use rule * from cmta as cmta_*


# the consumer's own rule, its default (after the `use rule` line: README)
rule count_slides:
    default_target: True
    input:
        "out/tiles/summary.tsv",
    output:
        "n_slides.txt",
    shell:
        "tail -n +2 {{input}} | wc -l > {{output}}"
"""


@pytest.mark.slow
def test_module_from_a_git_commit_runs_the_slide_stage_and_the_consumers_own_rule(tmp_path):
    """A consumer workflow uses this one from `git+file:///repo/workflow/Snakefile@<commit>`
    (of a scratch repository holding this checkout's files): the slide stage runs for real
    from that commit, and so does the consumer's own default rule. The repository's working
    tree is then broken, uncommitted: the run does not notice (everything is read from the
    commit). The same consumer plans from `github("owner/cmta-pipeline", tag="v0.2.0")`
    (Snakemake's source cache seeded with a clone: no network), and a branch is refused."""
    commit = scratch_repository(tmp_path / "repo")
    (tmp_path / "repo" / "workflow" / "rules" / "common.smk").write_text("raise SystemExit('working tree')\n")
    (tmp_path / "repo" / "cmta_pipeline" / "slides" / "sheet.py").write_text("raise SystemExit('working tree')\n")
    consumer = tmp_path / "consumer"
    tiny_slides(consumer / "data", ["TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0002-01Z-00-DX1"])
    (consumer / "my_config.yaml").write_text(yaml.safe_dump(
        {"outdir": "out", "slides": {"folder": "data"}, "tiling": {"preset": "biopsy"}}))
    source = repr(f"git+file://{tmp_path}/repo/workflow/Snakefile@{commit}")
    (consumer / "Snakefile").write_text(CONSUMER.format(source=source))
    r = snakemake("--cores", "2", cwd=consumer)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (consumer / "n_slides.txt").read_text().strip() == "2"
    for slide in ("TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0002-01Z-00-DX1"):
        assert (consumer / f"out/tiles/{slide}/{slide}.coords.h5").is_file()
    # planning imported the commit's torch-free modules, written into .snakemake/cmta/
    planning = list((consumer / ".snakemake" / "cmta").glob("0.2.0-*/python/cmta_pipeline/slides/sheet.py"))
    assert len(planning) == 1 and "working tree" not in planning[0].read_text()
    deploy = planning[0].parents[3] / "envs" / "slides.post-deploy.sh"
    assert f"CMTA_PACKAGE=git+file://{os.path.realpath(tmp_path / 'repo')}@{commit}" in deploy.read_text()

    cache = tmp_path / "cache"
    git("clone", "-q", "--bare", str(tmp_path / "repo"),
        str(cache / "snakemake/snakemake/source-cache/snakemake-git-cache/github.com/owner/cmta-pipeline"),
        cwd=tmp_path)
    for ref, ok in (('tag="v0.2.0"', True), ('branch="master"', False)):
        source = f'github("owner/cmta-pipeline", path="workflow/Snakefile", {ref})'
        (consumer / "Snakefile").write_text(CONSUMER.format(source=source))
        r = snakemake("-n", "--forceall", cwd=consumer, env={"XDG_CACHE_HOME": str(cache)})
        if ok:
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            assert re.search(r"^count_slides\s+1$", r.stdout, re.M) and re.search(r"^cmta_tile\s+2$", r.stdout, re.M)
            scripts = [p.read_text() for p in (consumer / ".snakemake" / "cmta").glob("0.2.0-*/envs/slides.post-deploy.sh")]
            assert sum("CMTA_PACKAGE=git+https://github.com/owner/cmta-pipeline@v0.2.0\nCMTA_EDITABLE=0" in t
                       for t in scripts) == 1, scripts
        else:
            assert r.returncode != 0 and "names a branch: give tag=... or commit=..." in r.stdout + r.stderr


# ---- a shared conda prefix ---------------------------------------------------------------


@pytest.mark.slow
def test_checkouts_of_two_versions_under_one_conda_prefix_get_their_own_envs(tmp_path):
    """Two checkouts, 0.2.0 and 0.2.1, with the same env files share one --conda-prefix:
    Snakemake's env listing gives each its own env, because the post-deploy script names
    what it installs. The same checkout from two working folders shares its env (so the
    listing can show sharing, and a difference means something)."""
    env = stand_in_conda(tmp_path / "conda")
    a = working_tree(tmp_path / "checkout-a")
    b = working_tree(tmp_path / "checkout-b")
    init = b / "cmta_pipeline" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.2.0"', '__version__ = "0.2.1"'))
    prefix = tmp_path / "shared-prefix"
    envs = {}
    for name, checkout in (("a1", a), ("a2", a), ("b", b)):
        work = demo_folder(tmp_path / f"work-{name}")
        r = snakemake("-s", str(checkout / "workflow" / "Snakefile"), *DEMO, "--config", "outdir=out",
                      "--use-conda", "--conda-prefix", str(prefix), "--list-conda-envs", cwd=work, env=env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        envs[name] = conda_envs(r.stdout)
        assert {"demo", "slides", "survival"} <= set(envs[name]), r.stdout
    assert envs["a1"] == envs["a2"]
    for name in envs["a1"]:
        assert envs["a1"][name] != envs["b"][name], name
    # the env files are the same bytes; the post-deploy scripts name version and source
    (ya,) = (tmp_path / "work-a1" / ".snakemake" / "cmta").glob("0.2.0-*/envs/slides.yaml")
    (yb,) = (tmp_path / "work-b" / ".snakemake" / "cmta").glob("0.2.1-*/envs/slides.yaml")
    assert ya.read_bytes() == yb.read_bytes() == (REPO / "workflow/envs/slides.yaml").read_bytes()
    deploy_a = ya.with_name("slides.post-deploy.sh").read_text()
    deploy_b = yb.with_name("slides.post-deploy.sh").read_text()
    assert f"CMTA_PACKAGE={os.path.realpath(a)}\nCMTA_EDITABLE=1\nCMTA_VERSION=0.2.0" in deploy_a
    assert f"CMTA_PACKAGE={os.path.realpath(b)}\nCMTA_EDITABLE=1\nCMTA_VERSION=0.2.1" in deploy_b


# ---- GPUs: gpu auto|true|false, from the command line, and the envs they need --------------


def _train_jobs(output: str) -> dict[str, str]:
    """run -> resources line of the train jobs of a dry run."""
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        if re.match(r"(?:local)?rule train:", block):
            run = re.search(r"wildcards: run=(\w+)", block).group(1)
            jobs.setdefault(run, re.search(r"resources: (.*)", block).group(1))
    return jobs


@pytest.mark.slow
def test_gpu_setting_parses_from_the_command_line(tmp_path):
    """`--config gpu=false` (a string to Snakemake) and gpu=0 ask for no GPU, gpu=true for
    one for the runs of slide models; a dict of strings (training={'epochs': '2'}) is typed
    by the schema; gpu=maybe is refused naming the key."""
    base = ["-n", "-s", str(SNAKEFILE), *DEMO, "--config", f"outdir={tmp_path}/out"]
    auto = "training={'device': 'auto', 'epochs': '2'}"
    for value, gpus in (("false", 0), ("0", 0), ("true", 1)):
        r = snakemake(*base, f"gpu={value}", auto, cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
        jobs = _train_jobs(r.stdout)
        # coxnet: the linear floor of table 1 (table1.floor), genomics only
        assert set(jobs) == {"cmta", "snn", "attmil", "coxnet"}, jobs
        for run, resources in jobs.items():
            assert f"gpu={gpus if run in ('cmta', 'attmil') else 0}" in resources, (value, run, resources)
    r = snakemake(*base, "gpu=maybe", cwd=REPO)
    assert r.returncode != 0 and "'maybe' is not one of [True, False, 'auto']" in r.stdout + r.stderr
    # a GPU model (sbatch --gpus=a100:1) for the jobs that ask for a GPU, and those only (a
    # model alone would make the SLURM plugin ask for a GPU)
    r = snakemake(*base, "gpu=true", "gpu_model=a100", auto, cwd=REPO)
    jobs = _train_jobs(r.stdout)
    assert "gpu_model=a100" in jobs["cmta"] and "a100" not in jobs["snn"], jobs


def test_cpu_only_use_conda_run_needs_no_cuda_env(tmp_path):
    """With gpu: false (and auto on a host without a GPU) no job of a --use-conda run uses
    the CUDA env, so conda never solves a CUDA build; gpu: true does (the control)."""
    env = stand_in_conda(tmp_path / "conda")
    base = ["-s", str(SNAKEFILE), *DEMO, "--use-conda", "--conda-prefix", str(tmp_path / "prefix"),
            "--list-conda-envs", "--config", "outdir=out", "training={'device': 'auto'}"]
    host_gpu = any(Path("/dev").glob("nvidia[0-9]*"))
    for value, cuda in (("false", False), ("true", True), ("auto", host_gpu)):
        work = demo_folder(tmp_path / value)
        r = snakemake(*base, f"gpu={value}", cwd=work, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        envs = conda_envs(r.stdout)
        assert "torch" in envs and ("torch-cuda" in envs) == cuda, (value, r.stdout)


# ---- planning needs pandas, not torch or OpenCV --------------------------------------------

BLOCK_HEAVY = """\
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "cv2", "openslide", "sksurv", "sklearn",
                                  "matplotlib", "h5py", "tifffile", "scipy"}:
            raise ImportError(f"planning imported {name}")
sys.meta_path.insert(0, Block())
"""


def test_planning_imports_neither_torch_nor_opencv(tmp_path):
    """Snakemake's own Python plans the demo and a folder of slides with every heavy
    package made unimportable: it needs pandas and the package's torch-free tables only.
    The blocker is shown to work on the demo's cohort module, which draws slides (cv2)."""
    from _feature_helpers import write_tiled_tiff

    run = BLOCK_HEAVY + "from snakemake.cli import main\nsys.argv = ['snakemake'] + sys.argv[1:]\nmain()\n"
    base = [sys.executable, "-c", run, "-n", "-s", str(SNAKEFILE), "--config", f"outdir={tmp_path}/out"]
    r = subprocess.run([*base, *DEMO], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"^tile\s+120$", r.stdout, re.M)
    (tmp_path / "slides").mkdir()
    write_tiled_tiff(tmp_path / "slides" / "TCGA-AA-0001-01Z-00-DX1.tif")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"slides": {"folder": str(tmp_path / "slides")}}))
    r = subprocess.run([*base, "--configfile", str(tmp_path / "c.yaml")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and re.search(r"^tile\s+1$", r.stdout, re.M), r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-c", BLOCK_HEAVY + "import cmta_pipeline.demo.cohort"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "planning imported cv2" in r.stderr


# ---- the SLURM profile -----------------------------------------------------------------------


def partition_config(profile: Path, cwd: Path) -> str:
    """The partition file the SLURM plugin will open, as Snakemake resolves the profile."""
    code = ("import sys; from snakemake.cli import parse_args\n"
            "print(parse_args(sys.argv[1:])[1].slurm_partition_config)")
    r = subprocess.run([sys.executable, "-c", code, "--profile", str(profile)],
                       cwd=cwd, capture_output=True, text=True, check=True)
    return os.path.join(cwd, r.stdout.strip().splitlines()[-1])


def test_slurm_profile_works_from_a_consumer_folder(tmp_path):
    """From a folder that is not the repository, the profile finds its partitions file (a
    dry run with it plans); the 0.1 value, a path from the repository root, did not."""
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "Snakefile").write_text(
        f"module cmta:\n    snakefile:\n        {str(SNAKEFILE)!r}\n    config:\n        config\n\n\n"
        "use rule * from cmta as cmta_*\n")
    (consumer / "config.yaml").write_text(yaml.safe_dump({"outdir": "out"}))
    profile = REPO / "profiles" / "slurm"
    assert Path(partition_config(profile, consumer)).resolve() == (profile / "partitions.yaml").resolve()
    r = snakemake("-n", "--profile", str(profile), "--configfile", "config.yaml", cwd=consumer)
    assert r.returncode == 0, r.stderr[-3000:]
    old = tmp_path / "old-profile"
    shutil.copytree(profile, old)
    text = (old / "config.yaml").read_text()
    (old / "config.yaml").write_text(text.replace("slurm-partition-config: partitions.yaml",
                                                  "slurm-partition-config: profiles/slurm/partitions.yaml"))
    assert not Path(partition_config(old, consumer)).exists()


def ceiling_problems(profile: dict, partitions: dict) -> list[str]:
    """Where the profile's per-job ceilings exceed a partition's limits (a retry asking for
    more than a partition has goes elsewhere or is refused by sbatch)."""
    out = []
    for name, limits in partitions["partitions"].items():
        for res, limit in (("mem_mb", "max_mem_mb"), ("runtime", "max_runtime")):
            if limit not in limits:
                out.append(f"{name}: no {limit}")
            elif profile["resources"][res] > limits[limit]:
                out.append(f"{name}: {res} ceiling {profile['resources'][res]} > {limit} {limits[limit]}")
    return out


def test_slurm_profile_caps_retries_within_the_partitions():
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    partitions = yaml.safe_load((REPO / "profiles/slurm/partitions.yaml").read_text())
    assert ceiling_problems(profile, partitions) == []
    assert profile["retries"] >= 1 and profile["set-resource-scopes"] == {"runtime": "local"}
    bigger = {**profile, "resources": {**profile["resources"], "mem_mb": 10**6}}
    assert ceiling_problems(bigger, partitions) == [
        "cpu: mem_mb ceiling 1000000 > max_mem_mb 64000", "gpu: mem_mb ceiling 1000000 > max_mem_mb 64000"]


# ---- the catalog's test config ---------------------------------------------------------------


def test_catalog_test_config_plans_the_whole_chain(tmp_path):
    """.test/config/config.yaml (the workflow catalog's CI runs `snakemake --directory
    .test`): a cut-down demo that needs nothing outside the repository."""
    work = tmp_path / ".test"
    shutil.copytree(REPO / ".test" / "config", work / "config")
    demo_folder(tmp_path)
    r = snakemake("-n", "-s", str(SNAKEFILE), "--cores", "2", cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M))
    assert {"demo_cohort", "tile", "genomics", "cohort", "train", "report"} <= set(jobs), jobs


def readme_module_snippet() -> tuple[str, str]:
    """(the README's module snippet, as written, dedented; the commit it pins)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"^    # Snakefile of your workflow\n(.*?)^    use rule \* from cmta as cmta_\*\n",
                      text, re.M | re.S)
    assert block, "README: the module snippet is missing"
    snippet = textwrap.dedent(block.group(0))
    commit = re.search(r'github\("OWNER/cmta-pipeline", path="workflow/Snakefile", commit="([0-9a-f]{40})"\)',
                       snippet)
    assert commit, snippet
    return snippet, commit.group(1)


@pytest.mark.slow
def test_readme_module_snippet_plans_as_written(tmp_path):
    """The README's snippet, exactly, with its github(...) line (Snakemake's source cache
    seeded with a clone of this repository: no network) and with the git+file:// form on a
    clone at HEAD, plans the module's chain. The commit it pins exists; a commit that does
    not (the control) stops planning."""
    snippet, pinned = readme_module_snippet()
    if subprocess.run(["git", "cat-file", "-e", f"{pinned}^{{commit}}"], cwd=REPO).returncode != 0:
        pytest.skip(f"the README's commit {pinned} is not in this checkout's history (a shallow clone?)")
    clone = tmp_path / "clone"
    git("clone", "-q", str(REPO), str(clone), cwd=tmp_path)
    head = git("rev-parse", "HEAD", cwd=clone)
    consumer = tmp_path / "consumer"
    (consumer / "config").mkdir(parents=True)
    (consumer / "config" / "config.yaml").write_text(yaml.safe_dump({"outdir": "out"}))
    cache = tmp_path / "cache"
    git("clone", "-q", "--bare", str(REPO),
        str(cache / "snakemake/snakemake/source-cache/snakemake-git-cache/github.com/OWNER/cmta-pipeline"),
        cwd=tmp_path)
    github_line = re.search(r"^\s*github\(.*\)$", snippet, re.M).group(0)
    local = snippet.replace(github_line.strip(), repr(f"git+file://{clone}/workflow/Snakefile@{head}"))
    missing = snippet.replace(pinned, "0" * 40)
    for text, ok in ((snippet, True), (local, True), (missing, False)):
        (consumer / "Snakefile").write_text(text)
        r = snakemake("-n", cwd=consumer, env={"XDG_CACHE_HOME": str(cache)})
        out = r.stdout + r.stderr
        assert (r.returncode == 0) == ok, out[-3000:]
        if ok:
            assert re.search(r"^cmta_tile_summary\s+1$", r.stdout, re.M), out[-3000:]


@pytest.mark.slow
def test_another_clone_plans_with_any_installed_package_but_runs_only_its_own(tmp_path):
    """A second copy of this checkout, planned and run with this checkout's Python (its
    cmta_pipeline installed from here): with the same files it runs; with one module
    changed it still plans (-n, --list-rules) but refuses to run a job, naming both."""
    clone = working_tree(tmp_path / "clone")
    wd = tmp_path / "wd"
    (wd / "config").mkdir(parents=True)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump({"outdir": "out"}))
    snakefile = str(clone / "workflow" / "Snakefile")
    r = snakemake("-s", snakefile, "--cores", "1", "out/tiles/summary.tsv", cwd=wd)
    assert r.returncode == 0, r.stderr[-3000:]
    sheet = clone / "cmta_pipeline" / "slides" / "sheet.py"
    sheet.write_text(sheet.read_text() + "\n# changed in the clone\n")
    for args in (["-n", "--forceall"], ["--list-rules"]):
        r = snakemake("-s", snakefile, *args, cwd=wd)
        assert r.returncode == 0, (args, r.stderr[-3000:])
    r = snakemake("-s", snakefile, "--cores", "1", "--forceall", "out/tiles/summary.tsv", cwd=wd)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"the cmta_pipeline installed in the Python that runs Snakemake ({REPO}, version" in out, out[-3000:]
    assert "other files than the source's" in out and str(clone) in out


@pytest.mark.slow
def test_gpu_auto_under_a_cluster_executor_asks_the_partitions_not_the_login_node(tmp_path):
    """gpu: auto with --executor slurm on this GPU-less host: the profile's partitions file
    with a GPU partition makes it true, one without makes it false (the control), and no
    partitions file stops planning in one line that names the jobs and the choice; --lint
    plans regardless. The answer is printed once."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({"outdir": "out"}))
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump({"partitions": {"cpu": {"max_gpu": 0}}}))
    slurm = ["-s", str(SNAKEFILE), "--executor", "slurm", "--jobs", "1"]
    for partitions, expected in ((REPO / "profiles" / "slurm" / "partitions.yaml", "true"),
                                 (tmp_path / "cpu.yaml", "false")):
        r = snakemake(*slurm, "-n", "--slurm-partition-config", str(partitions), cwd=tmp_path)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-3000:]
        assert out.count("gpu: auto ->") == 1 and f"gpu: auto -> {expected} (executor slurm, " in out, out[-3000:]
    r = snakemake(*slurm, "-n", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    line = next(x for x in out.splitlines() if x.startswith("gpu: auto cannot tell"))
    assert "(encode, encode_batch_<k>)" in line and "--config gpu=true" in line and "gpu=false" in line
    r = snakemake(*slurm, "-n", "--config", "gpu=false", cwd=tmp_path)
    assert r.returncode == 0 and "gpu: auto" not in r.stdout + r.stderr
    r = snakemake(*slurm, "--lint", cwd=tmp_path)
    assert "gpu: auto cannot tell" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
