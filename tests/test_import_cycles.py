"""No import cycles in the package (issue 11): the module-level import graph has none, and every
module imports in a fresh interpreter whichever module comes first."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import neuroalign

ROOT = Path(neuroalign.__file__).parent


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules its top-level statements import (function-local imports run
    later and cannot make a cycle at import time). `from pkg import sub` counts as importing `sub`
    when it is a module, else `pkg`; imports of a module's own packages are left out (Python
    has started those already)."""
    package = root.name
    mods: dict[str, Path] = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            for stmt in node.body if isinstance(node, ast.Try) else [node]:
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
