"""No import cycles in the package (issues 11 and 22): none in the module-level import graph, none
in the graph of every import statement wherever it stands (function-local ones included, but for the
few lazy edges listed in `LAZY_EDGES`), none between packages; the layers point one way
(`LAYER_RULES`); and every module imports in a fresh interpreter whichever module comes first."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import neuroalign

ROOT = Path(neuroalign.__file__).parent


def import_graph(root: Path, function_level: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules its top-level statements import (function-local imports run
    later and cannot make a cycle at import time); with `function_level`, every import statement
    anywhere in the module (functions, methods, `TYPE_CHECKING` blocks). `from pkg import sub` counts
    as importing `sub` when it is a module, else `pkg`; imports of a module's own packages are left
    out (Python has started those already)."""
    package = root.name
    mods: dict[str, Path] = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        tree = ast.parse(path.read_text())
        for node in [tree] if function_level else tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            for stmt in ast.walk(node) if function_level else node.body if isinstance(node, ast.Try) else [node]:
                if isinstance(stmt, ast.Import):
                    graph[name].update(a.name for a in stmt.names if a.name.split(".")[0] == package)
                elif isinstance(stmt, ast.ImportFrom):
                    base = stmt.module or ""
                    if stmt.level:
                        base = ".".join(here[:len(here) - stmt.level + 1] + ([stmt.module] if stmt.module else []))
                    if base.split(".")[0] != package:
                        continue
                    graph[name].update(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in stmt.names)
    return {m: {t for t in targets if t in mods and t != m and not m.startswith(t + ".")} for m, targets in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_level_import_cycle():
    assert cycles(import_graph(ROOT)) == []


# Function-local imports that close a cycle on purpose, each with its reason; the test fails on any
# other cycle and on an entry here that no longer exists (the list only shrinks).
LAZY_EDGES = {
    # the image-model registry loads its families on first use; each family module registers itself
    ("neuroalign.models.image_models", "neuroalign.models.dsnet_models"): "registry -> family",
    ("neuroalign.models.image_models", "neuroalign.models.efficientnet_lite"): "registry -> family",
    ("neuroalign.models.image_models", "neuroalign.models.filter_banks"): "registry -> family",
    # reading a subject runs the sandboxed check of a folder not yet checked (issue 22 item 3, the
    # import service, is where the check and the reader are to be separated)
    ("neuroalign.data.subject", "neuroalign.data.folder_check"): "load_subject -> ensure_checked",
}

# (importing package or module prefix, forbidden prefixes): the layers point one way
JOB_MACHINERY = ("neuroalign.jobs",)
LAYER_RULES = (
    # evaluation writes no files: the atomic writers (`io_utils`) belong to the run-folder side
    ("neuroalign.evaluation", ("neuroalign.training", "neuroalign.io_utils", *JOB_MACHINERY)),
    ("neuroalign.training", (*JOB_MACHINERY, "neuroalign.ui")),
    ("neuroalign.jobs", ("neuroalign.ui",)),
)


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto `neuroalign`'s direct children (`neuroalign.data.matio.v5` ->
    `neuroalign.data`; a top-level module stands for itself); the root package itself is left out."""
    def top(m: str) -> str:
        return ".".join(m.split(".")[:2])

    out: dict[str, set[str]] = {}
    for m, targets in graph.items():
        if "." not in m:
            continue
        out.setdefault(top(m), set()).update(top(t) for t in targets if "." in t and top(t) != top(m))
    return {m: {t for t in ts if t in out} for m, ts in out.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for layer, forbidden in LAYER_RULES for m, targets in graph.items()
                  if _within(m, (layer,)) for t in targets if _within(t, forbidden))


def test_no_function_level_import_cycle():
    graph = import_graph(ROOT, function_level=True)
    stale = [edge for edge in LAZY_EDGES if edge[1] not in graph.get(edge[0], set())]
    assert stale == [], f"LAZY_EDGES lists imports that are gone: {stale}"
    for a, b in LAZY_EDGES:
        graph[a].discard(b)
    assert cycles(graph) == []


def test_no_package_level_import_cycle():
    assert cycles(package_graph(import_graph(ROOT, function_level=True))) == []


def test_layers_point_one_way():
    """`evaluation` is pure functions on arrays and trainers: nothing from `training` or `jobs`, and
    no file writers (`io_utils`: results.json is written by `training.run_eval`);
    `training` imports nothing of `jobs` or the dashboard (`ui`); `jobs` nothing of `ui`."""
    assert layer_violations(import_graph(ROOT, function_level=True)) == []


def test_the_function_level_graph_and_the_rules_catch_violations(tmp_path):
    pkg = tmp_path / "neuroalign"
    for sub in ("evaluation", "training", "ui"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "evaluation" / "evaluate.py").write_text("def f():\n    from neuroalign.training import runs\n")
    (pkg / "training" / "runs.py").write_text("import numpy\n")
    (pkg / "training" / "pipeline.py").write_text("from neuroalign.evaluation import evaluate\n\n\n"
                                                  "def g():\n    if True:\n        import neuroalign.ui.keys\n")
    (pkg / "jobs").mkdir()
    (pkg / "jobs" / "__init__.py").write_text("")
    (pkg / "jobs" / "manager.py").write_text("from neuroalign.training import runs\n")  # above training: allowed
    (pkg / "ui" / "keys.py").write_text("def h():\n    from neuroalign.training.pipeline import g\n")
    graph = import_graph(pkg, function_level=True)
    assert graph["neuroalign.evaluation.evaluate"] == {"neuroalign.training.runs"}
    assert import_graph(pkg)["neuroalign.evaluation.evaluate"] == set()
    assert cycles(graph) == [["neuroalign.training.pipeline", "neuroalign.ui.keys"]]
    assert cycles(package_graph(graph)) == [["neuroalign.evaluation", "neuroalign.training", "neuroalign.ui"]]
    assert layer_violations(graph) == ["neuroalign.evaluation.evaluate -> neuroalign.training.runs",
                                       "neuroalign.training.pipeline -> neuroalign.ui.keys"]


def test_the_cycle_finder_finds_cycles(tmp_path):
    pkg = tmp_path / "neuroalign"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("from neuroalign.data.store import Store\n")
    (pkg / "data" / "store.py").write_text("from neuroalign.data import simulate\n\n\ndef f():\n"
                                          "    from neuroalign import late  # function-local: no edge\n")
    (pkg / "data" / "simulate.py").write_text("from .store import Store\nimport neuroalign.data\n")
    (pkg / "late.py").write_text("import neuroalign.data.store\n")
    graph = import_graph(pkg)
    assert graph["neuroalign.data.store"] == {"neuroalign.data.simulate"}
    assert cycles(graph) == [["neuroalign.data.simulate", "neuroalign.data.store"]]


def test_every_module_imports_in_either_order():
    """Sorted, then (package modules dropped from sys.modules) in reverse: an import that only works
    when another module came first fails one of the two."""
    names = sorted(m.name for m in pkgutil.walk_packages(neuroalign.__path__, "neuroalign.")
                   if not m.name.endswith("__main__"))
    code = f"""
import importlib, sys
names = {names!r}
for order in (names, names[::-1]):
    for name in [m for m in sys.modules if m == "neuroalign" or m.startswith("neuroalign.")]:
        del sys.modules[name]
    for name in order:
        importlib.import_module(name)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_cli_parser_does_not_load_torch():
    """The reason the CLI's remaining function-local imports exist: `--help` and argument parsing
    (the field table, the preset defaults) run without importing torch or the training engine."""
    code = ("import sys\nfrom neuroalign.cli import build_parser\n"
            "build_parser().parse_args(['train', '--subjects', 'x', '--heads', '2'])\n"
            "heavy = sorted(m for m in ('torch', 'neuroalign.training.trainer', 'neuroalign.models') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_package_uses_no_private_torch_modules():
    """torch's underscore modules change between releases: a `from torch.distributed.
    _functional_collectives import ...` ran here (torch 2.13) and failed to import on a GPU box's
    torch 2.11, taking every training path down with it. Public API only."""
    import re

    private = re.compile(r"^\s*(from|import)\s+torch(\.\w+)*\._\w*", re.M)
    found = [f"{p.relative_to(ROOT.parent)}: {m.group(0).strip()}"
             for p in sorted(ROOT.rglob("*.py")) for m in private.finditer(p.read_text())]
    assert not found, found
