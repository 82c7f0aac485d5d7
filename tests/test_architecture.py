"""The package's shape: one package per stage, no import circle, no private name crossing a
package, rooms one can read (docs/architecture.md). Each check is shown failing on a small
package written for the purpose, through the same code."""

from __future__ import annotations

import ast
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cmta_pipeline"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_COMMON_SMK_LINES = 200
#: what every stage uses; everything else lives in a stage's package
ROOT_MODULES = {
    "__init__", "__main__", "cli", "compat", "compute", "errors", "fileio", "ids", "modalities",
}


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module under ``package``."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str]]:
    """(module imported, name imported or '') of every import in ``path`` that points into
    the package, resolved to a module of ``known`` where it names one."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.split(".")[0] in known_roots(known)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in known_roots(known):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "") if sub in known else (target, alias.name))
    return found


def known_roots(known: set[str]) -> set[str]:
    return {k.split(".")[0] for k in known}


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> modules it imports at module level or inside functions (both count: a
    circle through a function-level import is still a circle in the design)."""
    mods = modules(package)
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        deps = set()
        for target, _ in imports(name, path, known):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), ignoring the edges
    from a package's ``__init__`` to its own modules (re-exports) and to its parents."""

    def skip(a: str, b: str) -> bool:
        return b.startswith(a + ".") or a.startswith(b + ".")

    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if skip(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def stage_of(module: str) -> str:
    """The top-level package a module belongs to (``cmta_pipeline.genomics.gdc`` ->
    ``cmta_pipeline.genomics``); root modules are their own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def private_imports(package: Path) -> list[str]:
    """``from X import _name`` where X lies in another stage package than the importer."""
    mods = modules(package)
    known = set(mods)
    bad = []
    for name, path in mods.items():
        for target, imported in imports(name, path, known):
            if imported.startswith("_") and not imported.startswith("__"):
                if stage_of(target) != stage_of(name):
                    bad.append(f"{name} imports {target}.{imported}")
    return bad


def long_functions(package: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    bad.append(f"{path.relative_to(package.parent)}:{node.lineno} {node.name} ({n} lines)")
    return bad


def long_modules(package: Path, limit: int = MAX_MODULE_LINES) -> list[str]:
    return [
        f"{p.relative_to(package.parent)} ({n} lines)"
        for p in sorted(package.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > limit
    ]


def root_modules(package: Path) -> set[str]:
    return {p.stem for p in package.glob("*.py")}


# ---- the project's package ----------------------------------------------------------


def test_no_import_circle():
    assert cycles(import_graph(PACKAGE)) == []


def test_no_private_name_crosses_a_package():
    assert private_imports(PACKAGE) == []


def test_modules_and_functions_are_rooms_one_can_read():
    assert long_modules(PACKAGE) == []
    assert long_functions(PACKAGE) == []


def test_the_package_root_holds_only_what_every_stage_uses():
    assert root_modules(PACKAGE) <= ROOT_MODULES, root_modules(PACKAGE) - ROOT_MODULES


STAGES = ["slides", "features", "genomics", "cohort", "training", "report", "heatmaps",
          "predict", "demo"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_maps_to_a_rule_file_a_package_and_a_page(stage):
    assert (PACKAGE / stage / "__init__.py").is_file()
    assert (PACKAGE / stage / "cli.py").is_file(), "the stage's commands"
    assert (REPO / "workflow" / "rules" / f"{stage}.smk").is_file()
    assert (REPO / "docs" / f"{stage}.md").is_file()
    assert f"`{stage}`" in (REPO / "docs" / "architecture.md").read_text()


def test_common_smk_keeps_only_what_every_rule_needs():
    rules = REPO / "workflow" / "rules"
    common = (rules / "common.smk").read_text()
    assert len(common.splitlines()) <= MAX_COMMON_SMK_LINES
    # a stage's input and argument functions live in rules/functions/<stage>.smk, which
    # the stage's rules file includes
    for stage, name in (("slides", "tile_args"), ("features", "features_args"),
                        ("genomics", "genomics_args"), ("cohort", "cohort_args"),
                        ("training", "train_args"), ("predict", "predict_args"),
                        ("heatmaps", "heatmap_args")):
        assert f"def {name}(" not in common, name
        assert f"def {name}(" in (rules / "functions" / f"{stage}.smk").read_text(), name
        assert f'include: "functions/{stage}.smk"' in (rules / f"{stage}.smk").read_text()


# ---- the checks themselves can fail ---------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in files.items():
        p = pkg / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return pkg


def test_checks_fail_on_a_package_built_to_fail_them(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    pkg = write_package(tmp_path, {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/one.py": "from ..b.two import _helper\n",
        "b/__init__.py": "",
        "b/two.py": "from ..a import one\n\ndef _helper():\n    pass\n",
        "big.py": "def long():\n" + body + "\n" + "\n" * MAX_MODULE_LINES,
    })
    assert cycles(import_graph(pkg)) == [["pkg.a.one", "pkg.b.two"]]
    assert private_imports(pkg) == ["pkg.a.one imports pkg.b.two._helper"]
    assert long_functions(pkg) == [f"pkg/big.py:1 long ({MAX_FUNCTION_LINES + 1} lines)"]
    assert long_modules(pkg) and "pkg/big.py" in long_modules(pkg)[0]
    assert root_modules(pkg) == {"__init__", "big"}


def test_checks_pass_a_package_without_those_faults(tmp_path):
    pkg = write_package(tmp_path, {
        "__init__.py": "",
        "a/__init__.py": "from .one import helper\n",
        "a/one.py": "from ..b.two import helper\n",
        "b/__init__.py": "",
        "b/two.py": "def helper():\n    pass\n\ndef _own():\n    return helper()\n",
    })
    assert cycles(import_graph(pkg)) == []
    assert private_imports(pkg) == []
    assert long_functions(pkg) == []


def _ruff(*paths: str | Path) -> subprocess.CompletedProcess:
    import shutil
    import sys

    ruff = Path(sys.executable).with_name("ruff")
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff not installed (pip install -e '.[test]')")
    return subprocess.run([exe, "check", "--no-cache", *map(str, paths)], capture_output=True,
                          text=True, cwd=REPO)


def test_ruff_finds_nothing_in_the_package_and_tests(tmp_path):
    """pyproject's ruff rules (pyflakes, import order) hold; the same call fails on a module
    with an unused import (the negative control)."""
    r = _ruff("cmta_pipeline", "tests")
    assert r.returncode == 0, r.stdout[-3000:]
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    assert _ruff(bad).returncode != 0
