"""The docs keep to the code: every setting is in the README's configuration table, and every repository
path the README and docs/ name exists."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "broker" / "README.md"]
PACKAGE = REPO / "mediaconduit_worker"
#: Paths the docs name that `make` creates, not the repository.
GENERATED = {"compose/.env": "make up writes it", "compose/wheelhouse": "make wheelhouse builds it",
             "compose/prometheus-debs": "make prometheus-debs downloads it"}
_TOP = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}
_SUFFIXES = (".py", ".md", ".yml", ".yaml", ".lua", ".sh", ".json", ".conf", ".toml")


def table_settings() -> set[str]:
    """The variables of the README's configuration table; ``MEDIACONDUIT_SERVICE_MEMORY`, `_CPUS``` names
    MEDIACONDUIT_SERVICE_CPUS as well."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Configuration"):]
    section = section[: section.index("\n## ", 1)]
    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        base = None
        for token in re.findall(r"`(_?[A-Z][A-Z0-9_]*)`", line.split("|")[1]):
            if token.startswith("MEDIACONDUIT_"):
                base = token
                names.add(token)
            elif base:
                names.add(base.rsplit("_", 1)[0] + token)
    return names


def test_every_setting_is_in_the_readme_table() -> None:
    from mediaconduit_worker.settings import Settings

    settings = {f"MEDIACONDUIT_{name.upper()}" for name in Settings.model_fields}
    table = table_settings()
    assert not settings - table, f"settings missing from the README's table: {sorted(settings - table)}"
    assert not table - settings, f"the README's table names settings that do not exist: {sorted(table - settings)}"


def named_paths(doc: Path) -> list[str]:
    """Repository paths in backquotes: a top-level folder's, a file's by its suffix, or a package module's
    (``worker/app.py``, ``pipeline/pin.py``), leaving out URLs, placeholders and variables."""
    found = []
    for token in re.findall(r"`([^`\s]+)`", doc.read_text()):
        token = token.rstrip(".,:;")
        if "/" not in token or "://" in token or any(c in token for c in "<>$*…{}=@[]|%~"):
            continue
        path = token.split("#")[0]
        if not re.fullmatch(r"[\w./-]+", path) or path.startswith(("/", ".venv")):
            continue
        if path.split("/")[0] in _TOP or path.endswith(_SUFFIXES):
            found.append(path.rstrip("/"))
    return found


def test_every_path_the_docs_name_exists() -> None:
    missing = []
    for doc in DOCS:
        for path in named_paths(doc):
            roots = (REPO, PACKAGE, PACKAGE / "worker", doc.parent)
            if path not in GENERATED and not any((root / path).exists() for root in roots):
                missing.append(f"{doc.relative_to(REPO)}: {path}")
    assert not missing, "the docs name paths that do not exist:\n" + "\n".join(missing)
