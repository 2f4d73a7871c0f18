"""docs/architecture.md stays true to the tree: its module map names every module, and only those."""

from __future__ import annotations

import re

from conftest import REPO

PACKAGE = REPO / "mediaconduit_worker"


def test_the_module_map_names_every_module_and_only_those() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    mapped = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.MULTILINE))
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}
    required = {m for m in modules if "/" not in m or not m.endswith("/__init__.py")}  # a subpackage's may be left out
    assert required <= mapped <= modules, (
        f"missing from the map: {sorted(required - mapped)}; in the map but gone: {sorted(mapped - modules)}")


def test_the_files_a_job_passes_through_exist_and_are_at_most_six() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    steps = re.findall(r"^\d\. `([\w/]+\.py)`", text, re.MULTILINE)
    assert 0 < len(steps) <= 6
    assert all((PACKAGE / step).is_file() for step in steps), steps
