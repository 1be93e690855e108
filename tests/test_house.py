"""House rules of the code (issue 15, items 19 and 20): no import cycles inside a layer, and
no module over MAX_LINES unless its docstring says why it is one piece."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the package directories and their import names (pyproject's package-dir)
LAYERS = {"theory": "geomem.theory", "numerics": "geomem.numerics"}
#: longest module accepted without a reason (issue 15 item 20)
MAX_LINES = 400
#: directories held to MAX_LINES here (validation/ is split separately)
SIZED = ("theory", "numerics", "benchmarks")
#: phrase a module docstring uses to say why it stays whole
ONE_PIECE = "one piece"
#: modules that other changes are reworking (the denoiser
#: training recipe of the memorization work): split them there, then remove the entry


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports anywhere (module level or in functions)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = package + ("." + node.module if node.module else "")
            elif node.level == 0 and node.module:
                base = node.module
            else:
                continue
            if node.module is None or base == package:  # from . import a, b
                out.update(f"{package}.{alias.name}" for alias in node.names)
            else:
                out.add(base)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m.startswith(package + ".")}


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_no_import_cycle_inside_a_layer(folder):
    package = LAYERS[folder]
    graph = {f"{package}.{p.stem}": _imports(p, package)
             for p in (ROOT / folder).glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt in graph and nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_cycle_finder_sees_function_level_imports(tmp_path):
    """The AST scan must catch ``from .a import x`` inside a function (that is how the old
    empirical <-> kernel cycle was written)."""
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from .kern import g\n    from . import other\n")
    assert _imports(mod, "geomem.numerics") == {"geomem.numerics.kern", "geomem.numerics.other"}


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for folder in SIZED
                                        for p in (ROOT / folder).glob("*.py")))
def test_module_is_short_or_says_why_not(path):
    text = (ROOT / path).read_text()
    n_lines = text.count("\n")
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert n_lines <= MAX_LINES or ONE_PIECE in doc, (
        f"{path} has {n_lines} lines (> {MAX_LINES}): split it by job, or say in its docstring "
        f"why it is {ONE_PIECE}")
