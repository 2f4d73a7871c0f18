"""The table of private internals (mediaconduit_worker/worker/internals.py) is true of the installed
libraries and of the package: every listed name exists, every private use is listed, nothing listed is gone.

A use is found by reading each module's whole syntax tree (imports and attribute uses inside functions
too):

- an import of a private module (``import _signal``) or of a private name of a library or of the standard
  library (``from kombu.x import _y``);
- in a class deriving from a library class, a method defined or an attribute read or set that is a private
  name of that base class (``_create_client``, ``self._pool``, ``self._already_revoked``);
- a private attribute of a library or standard-library module or object (``sys._getframe``);
- a private attribute read off any object when only the libraries define it (``connection._sock``);
- an assignment to, or a changing call on, a library's name (``trace.saferepr = ...``,
  ``TRANSPORT_ALIASES.update(...)``);
- a name of a module Celery documents only in its internals reference (``celery.worker.state``).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import platform
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from mediaconduit_worker.worker.internals import INTERNALS, Internal, resolve

#: Top-level module -> distribution.
LIBRARIES = {"celery": "celery", "kombu": "kombu", "billiard": "billiard", "redis": "redis"}
PACKAGE = REPO / "mediaconduit_worker"
#: Celery modules of the package's imports that Celery documents only under docs/internals/reference, and
#: the names of them its user guide documents all the same (custom remote-control commands).
INTERNAL_MODULES = frozenset({"celery.worker.state", "celery.app.trace", "celery.utils.saferepr", "celery.utils.functional",
                              "celery.concurrency.prefork", "celery.worker.control"})
DOCUMENTED_ANYWAY = frozenset({("celery.worker.control", "control_command"), ("celery.worker.control", "inspect_command")})
#: Calls that change a dict, list or set in place.
CHANGING = frozenset({"update", "setdefault", "pop", "popitem", "clear", "append", "extend", "insert", "remove",
                      "add", "discard", "__setitem__", "__delitem__"})


def _private(name: str) -> bool:
    """One leading underscore; not ``_`` itself, nor a documented ``_sunder_`` hook (``Enum._missing_``)."""
    return len(name) > 1 and name.startswith("_") and not name.startswith("__") and not name.endswith("_")


def _top(module: str | None) -> str:
    return (module or "").split(".")[0]


def _library(module: str | None) -> bool:
    return _top(module) in LIBRARIES


def _stdlib(module: str | None) -> bool:
    return _top(module) in sys.stdlib_module_names


def _names_in(tree: ast.AST) -> set[str]:
    """Every name a syntax tree defines, assigns or reads as an attribute."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


@functools.cache
def library_private_names() -> frozenset[str]:
    """Every private name the libraries' own code defines, assigns or reads as an attribute."""
    names: set[str] = set()
    for lib in LIBRARIES:
        root = Path(importlib.import_module(lib).__file__ or "").parent
        for path in root.rglob("*.py"):
            try:
                names |= _names_in(ast.parse(path.read_text(encoding="utf-8")))
            except (SyntaxError, UnicodeDecodeError):
                continue
    return frozenset(n for n in names if _private(n))


def _defined(tree: ast.AST) -> set[str]:
    """Names a module defines: functions, classes, and every name or attribute it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


@functools.cache
def package_defined_names() -> frozenset[str]:
    return frozenset(n for path in PACKAGE.rglob("*.py") for n in _defined(ast.parse(path.read_text(encoding="utf-8"))))


@functools.cache
def class_private_names(cls: type) -> frozenset[str]:
    """The private names a library class and its bases have: attributes, and what their code sets or reads."""
    names = {n for n in dir(cls) if _private(n)}
    for base in cls.__mro__:
        if base is object:
            continue
        try:
            names |= {n for n in _names_in(ast.parse(inspect.getsource(base).strip())) if _private(n)}
        except (OSError, TypeError, SyntaxError, IndentationError):
            continue
    return frozenset(names)


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def private_uses(path: Path) -> set[tuple[str, int, str]]:
    """(name, line, how) for each use of a private name of the libraries or CPython in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    theirs = library_private_names()
    ours = package_defined_names() | _defined(tree)
    bound: dict[str, str] = {}  # local name -> the library or standard-library module or object it is bound to
    found: set[tuple[str, int, str]] = set()

    def internal(module: str, name: str, line: int, how: str) -> None:
        if module in INTERNAL_MODULES and (module, name) not in DOCUMENTED_ANYWAY:
            found.add((name, line, f"{how} (Celery's internals reference)"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _private(_top(alias.name)):
                    found.add((alias.name, node.lineno, "imports a private CPython module"))
                elif _library(alias.name) or _stdlib(alias.name):
                    bound[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or _top(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__" and not node.level:
            module = node.module or ""
            for alias in node.names:
                local = alias.asname or alias.name
                if _private(_top(module)):
                    found.add((alias.name, node.lineno, f"imports from the private module {module}"))
                elif _library(module) or _stdlib(module):
                    if _private(alias.name):
                        found.add((alias.name, node.lineno, f"imports a private name from {module}"))
                    full = f"{module}.{alias.name}"
                    bound[local] = full if _is_module(full) else f"{module}:{alias.name}"
                    internal(module, alias.name, node.lineno, f"imports it from {module}")

    def library_object(name: str) -> Any:
        target = bound.get(name)
        if target is None or ":" not in target and not _library(target):
            return None
        module, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            return getattr(obj, attr) if attr else obj
        except (ImportError, AttributeError):
            return None

    for cls in (c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)):
        bases: set[str] = set()
        for base in cls.bases:
            dotted = _dotted(base)
            if not dotted or dotted[0] not in bound:
                continue
            obj = library_object(dotted[0])
            for part in dotted[1:]:
                obj = getattr(obj, part, None)
            if inspect.isclass(obj):
                bases |= class_private_names(obj)
        for node in ast.walk(cls):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in bases:
                found.add((node.name, node.lineno, f"overrides it in {cls.name}"))
            elif isinstance(node, ast.Attribute) and node.attr in bases and _root(node) in {"self", "super", "cls"}:
                found.add((node.attr, node.lineno, f"reads or sets it in {cls.name}"))
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id in bases:
                found.add((node.id, node.lineno, f"sets it in {cls.name}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            target = bound[node.value.id]
            if _private(node.attr):
                found.add((node.attr, node.lineno, f"reads {node.value.id}.{node.attr}"))
            if ":" not in target:
                internal(target, node.attr, node.lineno, f"reads {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr in theirs and node.attr not in ours:
            found.add((node.attr, node.lineno, "reads an attribute only the libraries define"))
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and _root(target.value) in bound:
                found.add((target.attr, node.lineno, "replaces it"))
            elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id in bound:
                found.add((target.value.id, node.lineno, "changes it"))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CHANGING
                and isinstance(node.func.value, ast.Name) and ":" in bound.get(node.func.value.id, "")):
            found.add((bound[node.func.value.id].partition(":")[2], node.lineno, "changes it"))
    return found


def package_uses() -> dict[tuple[str, str], list[str]]:
    """(module path in the package, name) -> where and how, for the whole package."""
    uses: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for name, line, how in sorted(private_uses(path)):
            uses.setdefault((rel, name), []).append(f"mediaconduit_worker/{rel}:{line} {name}: {how}")
    return uses


def _attribute(entry: Internal) -> str:
    return entry.name.partition(":")[2].split(".")[-1]


def _version(entry: Internal) -> str:
    top = _top(entry.name.partition(":")[0])
    if top in LIBRARIES:
        return f"{LIBRARIES[top]} {importlib.metadata.version(LIBRARIES[top])}"
    return f"CPython {platform.python_version()}"


@pytest.mark.parametrize("entry", INTERNALS, ids=[e.name for e in INTERNALS])
def test_each_listed_name_exists_in_the_installed_version(entry: Internal):
    try:
        resolve(entry)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{entry.name} is gone from the installed {_version(entry)} ({exc}); "
                    f"{', '.join(entry.used_by)} use(s) it for: {entry.buys}")


def test_every_private_use_is_listed_and_every_listed_use_exists():
    uses = package_uses()
    listed = {(module, _attribute(e)) for e in INTERNALS for module in e.used_by}
    unlisted = [where for key, wheres in uses.items() if key not in listed for where in wheres]
    assert not unlisted, ("private names of Celery/kombu/billiard/redis-py/CPython used without an entry in "
                          "mediaconduit_worker/worker/internals.py (say what each buys):\n" + "\n".join(unlisted))
    gone = sorted(f"{e.name} in {module}" for e in INTERNALS for module in e.used_by if (module, _attribute(e)) not in uses)
    assert not gone, "listed in worker/internals.py but no longer used there:\n" + "\n".join(gone)


def test_each_entry_is_named_once_and_says_what_it_buys():
    names = [e.name for e in INTERNALS]
    assert len(names) == len(set(names)), "an entry is listed twice"
    for entry in INTERNALS:
        assert _top(entry.name) in LIBRARIES or _stdlib(entry.name.partition(":")[0]), entry.name
        assert all((PACKAGE / module).is_file() for module in entry.used_by), entry
        assert len(entry.buys) > 40, f"{entry.name}: say what it buys"


def test_the_reader_finds_each_kind_of_use(tmp_path):
    """The control of the test above: each kind of use it claims to find, in a module written here, and
    none of the package's own private names."""
    module = tmp_path / "uses.py"
    module.write_text(
        "import _signal\n"
        "import sys\n"
        "from celery import Task\n"
        "from celery.app import trace\n"
        "from celery.worker.request import Request\n"
        "from celery.worker.state import active_requests\n"
        "from celery.worker.control import control_command\n"
        "from kombu.transport import TRANSPORT_ALIASES\n"
        "from kombu.transport import redis as kombu_redis\n"
        "from kombu.utils.functional import _argsfromspec\n"
        "class T(Task):\n"
        "    def _get_exec_options(self):\n"
        "        return {}\n"
        "class R(Request):\n"
        "    def revoked(self):\n"
        "        self._already_revoked = True\n"
        "        return self._message\n"
        "    def _ours(self):\n"
        "        return self._our_own_name\n"
        "class C(kombu_redis.Channel):\n"
        "    def ack(self):\n"
        "        return self._pool\n"
        "trace.saferepr = repr\n"
        "TRANSPORT_ALIASES.update(x='y')\n"
        "frame = sys._getframe()\n"
        "def body(message, connection):\n"
        "    import _thread\n"
        "    return message._decoded_cache, connection._sock\n"
    )
    names = {name for name, _, _ in private_uses(module)}
    assert names == {"_signal", "_argsfromspec", "_get_exec_options", "_message", "_pool", "saferepr",
                     "TRANSPORT_ALIASES", "_getframe", "_thread", "_already_revoked", "_decoded_cache", "_sock", "active_requests"}
