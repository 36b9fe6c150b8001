"""The package layers hold, and the check that says so can fail.

`make test` runs `lint-imports` (the contracts in pyproject.toml) before pytest. Here:
the contracts hold on the source; an upward import planted in a copy of the source
breaks them, whether it sits in a function or under TYPE_CHECKING; a cycle planted
between two modules of a package breaks them; and no two modules import each other,
directly or through others (grimp counts imports inside functions too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), str(REPO / "pyproject.toml"), "--no-cache", "--no-logo"], cwd=src.parent,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_contracts_hold():
    r = _lint(SRC)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


PLANTS = {
    # an upward import inside a function: the IR reaching for the driver
    "function-level": ("gimletc/ir/core.py", "\n\ndef _planted():\n    from gimletc.compiler import compile\n\n    return compile\n",
                       "gimletc.ir.core -> gimletc.compiler"),
    # an upward import only type checkers see: analysis naming a transform's type
    "type-checking": ("gimletc/analysis/metrics.py",
                      "\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from gimletc.passes.place import Place\n",
                      "gimletc.analysis.metrics -> gimletc.passes.place"),
    # a cycle between two modules of one package (schema <- cluster already)
    "sibling cycle": ("gimletc/hardware/schema.py", "\n\ndef _planted():\n    from gimletc.hardware import cluster\n\n    return cluster\n",
                      "No cycles are allowed in gimletc.hardware"),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_import_breaks_the_contracts(tmp_path, plant):
    path, code, says = PLANTS[plant]
    src = tmp_path / "src"
    shutil.copytree(SRC / "gimletc", src / "gimletc", ignore=shutil.ignore_patterns("__pycache__", "data"))
    with open(src / path, "a") as f:
        f.write(code)
    r = _lint(src)
    assert r.returncode != 0, r.stdout
    assert says in " ".join(r.stdout.split()), r.stdout


def test_no_module_imports_itself_through_others():
    """No cycle among the imports that run (function-level ones included). Imports under TYPE_CHECKING
    never run; the three the contracts allow are the load simulator's annotation-only back references."""
    graph = grimp.build_graph("gimletc", cache_dir=None, exclude_type_checking_imports=True)
    g = nx.DiGraph()
    for m in graph.modules:
        g.add_node(m)
        g.add_edges_from((m, t) for t in graph.find_modules_directly_imported_by(m))
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert cycles == []


def _sizes() -> tuple[list[tuple[str, int]], list[tuple[str, str, int]]]:
    """Every source file's lines and every class's lines."""
    import ast

    files, classes = [], []
    for p in sorted((SRC / "gimletc").rglob("*.py")):
        text = p.read_text()
        rel = str(p.relative_to(REPO))
        files.append((rel, text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                classes.append((rel, node.name, node.end_lineno - node.lineno + 1))
    return files, classes


def test_no_source_file_over_800_lines_and_no_class_over_400():
    """Issue 9's bound on size: files split along ideas before they pass 800 lines, classes before 400."""
    files, classes = _sizes()
    assert files and classes
    assert [f for f in files if f[1] > 800] == []
    assert [c for c in classes if c[2] > 400] == []
