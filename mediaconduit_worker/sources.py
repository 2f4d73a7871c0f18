"""Where providers and services come from: URL forms, git fetches pinned to a commit, on-disk cache."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ProviderSourceError
from .settings import get_settings

log = logging.getLogger(__name__)
_SHA = re.compile(r"^[0-9a-f]{40}$")
_GIT_TIMEOUT = 300


def stable_id(text: str) -> str:
    """A short name for ``text`` that never changes: cache folders, container labels, module names."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Source:
    """A parsed provider/service URL: ``kind`` says how to fetch ``location`` (at ``ref``)."""

    url: str
    kind: Literal["git", "path", "pypi"]
    location: str
    ref: str | None = None

    @property
    def key(self) -> str:
        return stable_id(f"{self.kind}:{self.location}")


@dataclass(frozen=True)
class Checkout:
    """A source materialised on disk: ``root`` holds the repository tree at ``commit`` (git, or a folder
    that is a work tree), or the installed package at ``version`` (PyPI)."""

    source: Source
    root: Path
    commit: str | None
    version: str | None = None

    def describe(self) -> dict[str, str | None]:
        out = {"url": self.source.url, "kind": self.source.kind, "ref": self.source.ref, "commit": self.commit}
        return out | ({"version": self.version} if self.version else {})


def _split_ref(url: str) -> tuple[str, str | None]:
    """``…/repo@ref`` → (``…/repo``, ``ref``); an ``@`` before the last ``/`` (user@host) is no ref."""
    head, sep, tail = url.rpartition("@")
    if sep and "/" not in tail and tail and "/" in head:
        return head, tail
    return url, None


def parse_source(url: str) -> Source:
    """Classify a provider/service URL (see the design's list of accepted forms)."""
    raw = url.strip()
    if not raw:
        raise ProviderSourceError("empty provider URL")
    if raw.startswith("pypi:"):
        spec = raw[5:].strip()
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*((==|>=|<=|~=|!=|>|<)\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)*$", spec):
            raise ProviderSourceError(f"malformed pypi provider URL {url!r}: expected pypi:NAME[==VERSION]")
        return Source(raw, "pypi", spec)
    if raw.startswith("git+"):
        loc, ref = _split_ref(raw[4:])
        return Source(raw, "git", loc, ref)
    if re.match(r"^(https?|ssh|git)://", raw) or re.match(r"^[\w.-]+@[\w.-]+:", raw):
        loc, ref = _split_ref(raw)
        if re.match(r"^https?://github\.com/", loc):
            parts = loc.rstrip("/").split("/")
            if len(parts) < 5 or not parts[3] or not parts[4]:
                raise ProviderSourceError(f"malformed GitHub provider URL {url!r}: expected https://github.com/ORG/REPO[@REF]")
        return Source(raw, "git", loc.rstrip("/"), ref)
    if raw.startswith("file://"):
        loc, ref = _split_ref(raw)
        path = loc[len("file://") :]
        if path.rstrip("/").endswith(".git"):
            return Source(raw, "git", loc, ref)
        return Source(raw, "path", str(Path(path).resolve()))
    if "://" in raw:
        raise ProviderSourceError(f"unsupported provider URL scheme in {url!r}")
    return Source(raw, "path", str(Path(raw).expanduser().resolve()))


def check_allowed(url: str) -> None:
    """Enforce ``MEDIACONDUIT_PROVIDER_ALLOW`` (comma-separated prefixes) before anything is fetched."""
    allow = get_settings().provider_allow
    if not allow:
        return
    prefixes = [p.strip() for p in allow.split(",") if p.strip()]
    if not any(url.startswith(p) for p in prefixes):
        raise ProviderSourceError(f"provider URL {url!r} is not allowed by MEDIACONDUIT_PROVIDER_ALLOW")


_local_locks: dict[str, threading.Lock] = {}
_local_locks_guard = threading.Lock()


@contextmanager
def file_lock(name: str) -> Iterator[None]:
    """An exclusive lock shared by every process using the same cache (flock; released on crash).

    Threads of one process queue on an in-process lock first (flock does not order them), and the
    flock is polled rather than blocked on, so a gevent worker's other greenlets keep running.
    """
    with _local_locks_guard:
        local = _local_locks.setdefault(name, threading.Lock())
    locks = get_settings().cache / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with local, open(locks / f"{name}.lock", "w") as fh:
        delay = 0.005
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _git(*args: str, cwd: Path | None = None, url: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=_GIT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise ProviderSourceError(f"cannot fetch {url!r}: git {args[0]} timed out after {_GIT_TIMEOUT}s") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise ProviderSourceError(f"cannot fetch {url!r}: git {args[0]}: {detail}")
    return proc.stdout.strip()


class SourceCache:
    """Mirrors git sources under ``cache/git``, exports each pinned commit once under ``cache/checkouts``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or get_settings().cache

    def _pin_path(self, source: Source) -> Path:
        return self.root / "pins" / (stable_id(source.url) + ".json")

    def _checkout_dir(self, source: Source, commit: str) -> Path:
        return self.root / "checkouts" / source.key / commit

    def read_pin(self, source: Source) -> Checkout | None:
        """A pinned checkout still on disk and fresh enough, or None; no git involved."""
        try:
            pin = json.loads(self._pin_path(source).read_text())
        except (FileNotFoundError, ValueError):
            return None
        refresh = get_settings().provider_refresh
        if refresh and not _SHA.match(source.ref or "") and time.time() - pin.get("fetched_at", 0) > refresh:
            return None
        root = self._checkout_dir(source, pin["commit"])
        return Checkout(source, root, pin["commit"]) if root.is_dir() else None

    def materialise(self, source: Source, update: bool = False) -> Checkout:
        """The source on disk at its pinned (or freshly resolved, when ``update``) commit."""
        if source.kind == "path":
            root = Path(source.location)
            if not root.is_dir():
                raise ProviderSourceError(f"provider folder {source.url!r} does not exist")
            return Checkout(source, root, _folder_commit(root))
        if source.kind != "git":
            raise ProviderSourceError(f"{source.url!r} is not a git or folder source")
        if not update:
            pinned = self.read_pin(source)
            if pinned is not None:
                return pinned
        with file_lock(source.key):
            if not update:  # another process may have done the work while we waited
                pinned = self.read_pin(source)
                if pinned is not None:
                    return pinned
            commit = self._fetch(source)
            root = self._export(source, commit)
            pin = {"url": source.url, "ref": source.ref, "commit": commit, "fetched_at": time.time()}
            self._pin_path(source).parent.mkdir(parents=True, exist_ok=True)
            tmp = self._pin_path(source).with_suffix(".tmp")
            tmp.write_text(json.dumps(pin))
            os.replace(tmp, self._pin_path(source))
            return Checkout(source, root, commit)

    def _fetch(self, source: Source) -> str:
        mirror = self.root / "git" / f"{source.key}.git"
        rev = f"{source.ref or 'HEAD'}^{{commit}}"
        if not mirror.is_dir():
            log.info("cloning %s", source.location)
            mirror.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=mirror.parent, prefix=".clone-"))
            try:
                _git("clone", "--mirror", "--quiet", source.location, str(tmp), url=source.url)
                os.replace(tmp, mirror)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        elif not (source.ref and _SHA.match(source.ref) and self._has(mirror, rev)):
            log.info("fetching %s", source.location)
            _git("remote", "update", "--prune", cwd=mirror, url=source.url)
        if not self._has(mirror, rev):
            raise ProviderSourceError(f"cannot fetch {source.url!r}: no ref {source.ref or 'HEAD'!r} in the repository")
        return _git("rev-parse", "--verify", rev, cwd=mirror, url=source.url)

    @staticmethod
    def _has(mirror: Path, rev: str) -> bool:
        return subprocess.run(["git", "rev-parse", "--verify", "--quiet", rev], cwd=mirror, capture_output=True).returncode == 0

    def _export(self, source: Source, commit: str) -> Path:
        target = self._checkout_dir(source, commit)
        if target.is_dir():
            return target
        mirror = self.root / "git" / f"{source.key}.git"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
        try:
            archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=mirror, capture_output=True, check=True)
            with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                # The "data" filter (refuses links and paths leaving tmp) exists from Python 3.11.4.
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:
                    tar.extractall(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def _folder_commit(root: Path) -> str | None:
    """The git HEAD of a provider folder, when it is a work tree; None otherwise."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:  # no git on this machine: folders still load
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None
