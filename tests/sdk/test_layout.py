"""The package's shape: no import circles, and the SDK at the root never imports the runtime."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "mediaconduit_worker"
RUNTIME = ("worker", "services", "batch", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports() -> dict[str, set[str]]:
    """Module → package modules it imports at module level (function-level imports are lazy by intent)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    exists = (REPO / full.replace(".", "/")).with_suffix(".py").exists()
                    found.add(full if exists else target)
            elif isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found.update(m for m in mods if m.startswith("mediaconduit_worker"))
        graph[name] = found - {name}
    return graph


def test_no_import_circles():
    graph = _top_level_imports()
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
    assert cycles == []


def test_sdk_modules_never_import_the_runtime():
    graph = _top_level_imports()
    runtime = tuple(f"mediaconduit_worker.{p}" for p in RUNTIME)
    sdk = [m for m in graph if m.count(".") == 1 and not m.startswith(runtime) and m != "mediaconduit_worker.celery_app"]
    assert len(sdk) > 10
    offenders = {m: sorted(i for i in graph[m] if i.startswith(runtime)) for m in sdk}
    assert {m: v for m, v in offenders.items() if v} == {}
