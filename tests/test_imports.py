"""The package's import graph flows one way (issue #15): no module imports, directly or through others,
a module that imports it back.

The graph is built statically with ``ast`` from every ``import`` / ``from ... import`` in each
module's source, function-level (deferred) imports included, so a cycle hidden behind a deferred
import is still one. Imports under ``if TYPE_CHECKING:`` never run and are left out, as is the
implicit import of a module's parent packages (every submodule would otherwise form a cycle with
an ``__init__`` that imports it). Each module must also import on its own, in a fresh state.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import networkx as nx

import emergence_fast

PACKAGE = "emergence_fast"


def modules() -> dict[str, Path | None]:
    """Every module of the package by dotted name: its source file, or None for a compiled one (``_C``).

    ``emergence_fast.kernels`` lives in ``kernels/`` (setup.py's package_dir), so it is walked too.
    """
    found = {PACKAGE: None, f"{PACKAGE}.kernels": None}
    for root in (emergence_fast, importlib.import_module(f"{PACKAGE}.kernels")):
        found.update({info.name: None for info in pkgutil.walk_packages(root.__path__, root.__name__ + ".")})
    for name in found:
        origin = importlib.util.find_spec(name).origin
        found[name] = Path(origin) if origin and origin.endswith(".py") else None
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, known) -> set[str]:
    """The package modules ``node`` (in module ``name`` at ``path``) imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level:
        parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(parts[:len(parts) - node.level + 1])
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module
    # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod.
    out = {f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in known}
    if len(out) < len(node.names) and source in known:
        out.add(source)
    return out


def import_graph() -> nx.DiGraph:
    known = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for name, path in known.items():
        if path is None:
            continue
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            graph.add_edges_from((name, target) for target in _targets(name, path, node, known) if target != name)
    return graph


def cycles(graph: nx.DiGraph) -> list[frozenset[str]]:
    """The strongly connected components with more than one module: each holds at least one cycle."""
    return [frozenset(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]


def test_the_graph_sees_deferred_and_relative_imports():
    """The parser must see what the cycle check relies on, or an empty graph would pass it."""
    graph = import_graph()
    assert graph.has_edge("emergence_fast.estimators.knn", "emergence_fast.ops.knn")  # from ..ops.knn import ...
    assert graph.has_edge("emergence_fast.ops.knn", "emergence_fast._dispatch")  # from .. import _dispatch
    assert graph.has_edge("emergence_fast._dispatch", "emergence_fast.kernels.knn")  # deferred, in a function
    assert graph.has_edge("emergence_fast.kernels.knn", "emergence_fast.kernels._launch")
    tree = ast.parse("def f():\n    from .estimators import knn\nif TYPE_CHECKING:\n    from . import cli\n")
    targets = set().union(*(_targets("emergence_fast._dispatch", Path("_dispatch.py"), node, modules())
                            for node in _imports(tree)))
    assert targets == {"emergence_fast.estimators.knn"}


def test_dispatch_imports_only_downward():
    """_dispatch picks backends: it reaches the kernels, never the ops or estimators that call it."""
    below = set(nx.descendants(import_graph(), "emergence_fast._dispatch"))
    assert below <= {"emergence_fast.kernels", "emergence_fast._C"} | {
        m for m in below if m.startswith("emergence_fast.kernels.")}, below


def test_import_graph_has_no_cycle():
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"import cycles (strongly connected modules): {found}"


def test_a_cycle_is_found():
    """The check above must be able to fail: a two-module cycle in a toy graph is one component."""
    graph = nx.DiGraph([("a", "b"), ("b", "a"), ("b", "c")])
    assert cycles(graph) == [frozenset({"a", "b"})]


_IMPORT_EACH_ALONE = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "emergence_fast" or m.startswith("emergence_fast.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=3))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone():
    """Each module imports first, on its own (the package state reset between them, torch kept)."""
    names = sorted(modules())
    env = {**os.environ, "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "1")}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH_ALONE, *names], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).resolve().parents[1], timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
