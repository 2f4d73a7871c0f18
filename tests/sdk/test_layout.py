"""The package's shape: no import circles, and the SDK at the root never imports the runtime.

Every import counts, wherever it stands: at module level, inside a function or method (a lazy import
still runs, and closes a circle the first time it does), under ``try``. Only ``if TYPE_CHECKING:``
blocks are left out: they never run, and hold names used in annotations only (``from __future__ import
annotations`` keeps those unevaluated), so they cannot load a module or close a circle at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "mediaconduit_worker"
RUNTIME = ("worker", "services", "batch", "cli", "gateway")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:`` (with no ``else``, which would run)."""
    if not isinstance(node, ast.If) or node.orelse:
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` that can run, at any depth."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _is_module(name: str) -> bool:
    path = REPO / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports, at any depth (see the module docstring)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                if not target.startswith("mediaconduit_worker"):
                    continue
                for alias in node.names:  # `from . import x` imports module x; `from .m import f`, module m
                    full = f"{target}.{alias.name}"
                    found.add(full if _is_module(full) else target)
            else:
                found.update(a.name for a in node.names if a.name.startswith("mediaconduit_worker"))
        graph[name] = found - {name}
    return graph


def test_the_reader_sees_imports_inside_functions_and_skips_type_checking_blocks():
    source = """
import typing
from typing import TYPE_CHECKING
from .a import x
if TYPE_CHECKING:
    from .b import y
if typing.TYPE_CHECKING:
    from .c import z
def f():
    try:
        from .d import w
    except ImportError:
        import mediaconduit_worker.e
class K:
    def m(self):
        from . import g
"""
    names = [(n.module, n.level) if isinstance(n, ast.ImportFrom) else n.names[0].name
             for n in _imports(ast.parse(source))]
    assert names == ["typing", ("typing", 0), ("a", 1), ("d", 1), "mediaconduit_worker.e", (None, 1)]
    assert "mediaconduit_worker.worker.app" in _import_graph()["mediaconduit_worker"]  # the lazy `transform`


def test_type_checking_blocks_hold_only_imports():
    """What the graph leaves out is names for annotations and type checkers, never code."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if _is_type_checking(node):
                assert isinstance(node, ast.If)
                offenders += [f"{path.relative_to(REPO)}:{n.lineno}" for n in node.body
                              if not isinstance(n, ast.Import | ast.ImportFrom)]
    assert offenders == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_circles():
    assert _cycles(_import_graph()) == []


def test_sdk_modules_never_import_the_runtime():
    graph = _import_graph()
    runtime = tuple(f"mediaconduit_worker.{p}" for p in RUNTIME)
    sdk = [m for m in graph if m.count(".") == 1 and not m.startswith(runtime) and m != "mediaconduit_worker.celery_app"]
    assert len(sdk) > 10
    offenders = {m: sorted(i for i in graph[m] if i.startswith(runtime)) for m in sdk}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_redaction_is_a_leaf():
    """The HTTP client, the fetcher and the records all import redaction; it imports only ``errors``."""
    assert _import_graph()["mediaconduit_worker.redaction"] <= {"mediaconduit_worker.errors"}
