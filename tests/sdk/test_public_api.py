"""The SDK's public surface: one sorted ``__all__`` equal to what the root exports, and no runtime in it."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import mediaconduit_worker

LAZY = ["transform"]  # the producer API, imported from the worker runtime on first use


def test_all_is_sorted_and_equals_the_exported_names():
    exported = [name for name, value in vars(mediaconduit_worker).items()
                if not name.startswith("_") and not isinstance(value, ModuleType)]
    assert mediaconduit_worker.__all__ == sorted(exported + LAZY)


def test_every_name_in_all_resolves():
    for name in mediaconduit_worker.__all__:
        assert getattr(mediaconduit_worker, name) is not None, name
    assert mediaconduit_worker.per_token_price("2", per=1e6) == 2e-6


def test_importing_the_sdk_loads_neither_celery_nor_docker():
    code = "import mediaconduit_worker, sys; print(sorted({'celery', 'docker', 'kombu'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reference_providers_import_only_the_sdk_root():
    """A provider repository imports ``mediaconduit_worker`` itself, never a runtime module."""
    from conftest import REPO

    offenders = []
    for path in sorted((REPO / "providers").glob("*/src/**/*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "mediaconduit_worker." in line and ("import" in line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_error_tree_in_the_docstring_matches_the_classes():
    """Each error class is drawn once, under the class it derives from."""
    import re

    from mediaconduit_worker import errors

    classes = {c.__name__: c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.MediaConduitError)}
    drawn: dict[str, int] = {}  # name -> column
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^([ │├└─]*)(\w+Error)\b", line)
        if not m:
            continue
        col, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= col:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((col, name))
        drawn[name] = col
    assert set(drawn) == set(classes)
    for name, parent in parents.items():
        assert classes[parent] in classes[name].__mro__[1:], (name, parent)


def test_no_exported_name_hides_a_submodule():
    """``from .redaction import redact`` makes ``mediaconduit_worker.redact`` the function: were a module
    named ``redact`` too, ``import mediaconduit_worker.redact as m`` and ``mock.patch`` would silently get
    the function instead."""
    from conftest import REPO

    modules = {p.stem for p in (REPO / "mediaconduit_worker").glob("*.py")}
    modules |= {p.parent.name for p in (REPO / "mediaconduit_worker").glob("*/__init__.py")}
    assert modules & set(mediaconduit_worker.__all__) == set()


def test_every_error_is_exported():
    from mediaconduit_worker import errors

    defined = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__}
    assert defined - set(mediaconduit_worker.__all__) == set()


def test_the_docs_name_what_is_retried_and_what_fails_over():
    """errors.py's docstring, docs/architecture.md and the README name every class the task retries and
    every class that moves a routed job to its next candidate."""
    from conftest import REPO

    from mediaconduit_worker import errors
    from mediaconduit_worker.worker.failover import FAILOVER_EXCEPTIONS
    from mediaconduit_worker.worker.reliability import TRANSIENT_EXCEPTIONS

    names = {c.__name__ for c in (*TRANSIENT_EXCEPTIONS, *FAILOVER_EXCEPTIONS)}
    names |= {c.__name__ for c in vars(errors).values()
              if isinstance(c, type) and issubclass(c, errors.TransientError)}
    for where, text in [("errors.py", errors.__doc__ or ""),
                        ("docs/architecture.md", (REPO / "docs" / "architecture.md").read_text()),
                        ("README.md", (REPO / "README.md").read_text())]:
        assert {n for n in names if f"`{n}`" not in text} == set(), where
        assert "TRANSIENT_EXCEPTIONS" in text and "FAILOVER_EXCEPTIONS" in text, where
