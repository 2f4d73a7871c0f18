"""Where providers and services come from: URL forms, git fetches pinned to a commit, on-disk cache."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import socket
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
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import ConfigurationError, ProviderNotAllowedError, ProviderSourceError
from .record import strip_userinfo
from .settings import get_settings

log = logging.getLogger(__name__)
_SHA = re.compile(r"^[0-9a-f]{40}$")
_GIT_TIMEOUT = 300
#: Transports git may use (``ext::`` and ``fd::`` run commands); overrides ``protocol.*.allow``.
GIT_PROTOCOLS = "file:git:http:https:ssh"
_SCHEME_URL = re.compile(r"^(https?|ssh|git)://", re.I)
_SCP_URL = re.compile(r"^(?P<user>[\w.-]+)@(?P<host>[\w.-]+):(?P<path>.*)$")
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "git": 9418}


def stable_id(text: str) -> str:
    """A short name for ``text`` that never changes: cache folders, container labels, module names."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Source:
    """A parsed provider/service URL: ``kind`` says how to fetch ``location`` (at ``ref``); a git source
    may name a ``subdirectory`` of the repository (a monorepo holding several providers and services)."""

    url: str
    kind: Literal["git", "path", "pypi"]
    location: str
    ref: str | None = None
    subdirectory: str | None = None

    @property
    def key(self) -> str:
        """The repository (not the folder in it): one mirror and one export per commit serve all its folders."""
        return stable_id(f"{self.kind}:{self.location}")

    def at(self, commit: str, subdirectory: str | None) -> str:
        """The URL of another folder of this git repository, pinned to ``commit`` (pip's VCS form)."""
        repository = ("git+" if self.url.startswith("git+") else "") + self.location
        return f"{repository}@{commit}" + (f"#subdirectory={subdirectory}" if subdirectory else "")

    @property
    def locator(self) -> tuple[str, ...]:
        """What ``MEDIACONDUIT_PROVIDER_ALLOW`` compares (see ``check_allowed``)."""
        return _locator(("pypi:" if self.kind == "pypi" else "") + self.location, self.url)


@dataclass(frozen=True)
class Checkout:
    """A source materialised on disk: ``root`` holds the provider or service (the repository tree at
    ``commit``, or its subdirectory; a folder, which may be a work tree), or the installed package at
    ``version`` (PyPI)."""

    source: Source
    root: Path
    commit: str | None
    version: str | None = None

    def describe(self) -> dict[str, str | None]:
        out = {"url": self.source.url, "kind": self.source.kind, "ref": self.source.ref, "commit": self.commit,
               "subdirectory": self.source.subdirectory}
        return out | ({"version": self.version} if self.version else {})

    def resolve(self, url: str) -> str:
        """``url`` as named by this checkout's manifest (a provider's ``serviceUrl``): a relative path
        (``../../services/cowsay-service``) is taken inside the same repository at the same commit, or
        against the folder; any other URL is returned unchanged."""
        if not is_relative(url):
            return url
        if self.source.kind != "git" or self.commit is None:
            return str((self.root / url.strip()).resolve())
        target = posixpath.normpath(posixpath.join(self.source.subdirectory or "", url.strip()))
        if target == ".." or target.startswith("../"):
            raise ProviderSourceError(f"{url!r} (named by {self.source.url!r}) points outside the repository")
        return self.source.at(self.commit, None if target == "." else target)


_GITHUB_TREE = re.compile(r"^(https?://github\.com/[^/@#]+/[^/@#]+)/tree/([^/]+)(?:/(.*))?$")


def is_relative(url: str) -> bool:
    """A path relative to the manifest naming it (``../services/x``), not a URL or an absolute path."""
    raw = url.strip()
    return (bool(raw) and "://" not in raw and not raw.startswith(("/", "~", "pypi:", "git+"))
            and not _SCP_URL.match(raw))


def _split_ref(url: str) -> tuple[str, str | None]:
    """``…/repo@ref`` → (``…/repo``, ``ref``); an ``@`` before the last ``/`` (user@host) is no ref."""
    head, sep, tail = url.rpartition("@")
    if sep and "/" not in tail and tail and "/" in head:
        return head, tail
    return url, None


def _subdirectory(path: str, url: str) -> str | None:
    """A folder of the repository, normalised; ``..`` and absolute paths are refused."""
    if not path.strip() or path.startswith("/") or ".." in path.split("/"):
        raise ProviderSourceError(f"subdirectory {path!r} in {url!r} must be a path inside the repository "
                                  "(relative, without '..')")
    normal = posixpath.normpath(path)
    return None if normal == "." else normal


def _split_fragment(raw: str, url: str) -> tuple[str, str | None]:
    """pip's ``…#subdirectory=PATH`` → (``…``, ``PATH``)."""
    head, sep, fragment = raw.partition("#")
    if not sep:
        return raw, None
    key, eq, value = fragment.partition("=")
    if key != "subdirectory" or not eq:
        raise ProviderSourceError(f"unsupported fragment {'#' + fragment!r} in {url!r}: expected #subdirectory=PATH")
    return head, _subdirectory(value, url)


def pypi_requirement(spec: str, url: str) -> Requirement:
    """``NAME[extras][specifier]`` of a ``pypi:`` URL: never a direct URL, a path or a pip option."""
    spec = spec.strip()
    try:
        req = Requirement(spec)
    except InvalidRequirement:
        req = None
    if req is None or req.url or req.marker or spec.startswith("-"):
        raise ProviderSourceError(f"malformed pypi provider URL {url!r}: expected pypi:NAME[==VERSION]")
    return req


def _segments(path: str, url: str) -> list[str]:
    """The path's segments, refusing what could step out of an allowed prefix once a server decodes it."""
    out = []
    for raw in path.split("/"):
        seg = unquote(raw)
        if seg in (".", "..") or any(c in seg for c in "/\\%"):
            raise ProviderSourceError(f"provider URL {url!r}: path segment {raw!r} is refused "
                                      "('.' and '..' segments, percent-encoded dots, slashes or '%' are not allowed)")
        if seg:
            out.append(seg)
    return out


def _locator(text: str, url: str) -> tuple[str, ...]:
    """What an allow-list compares: ``("url", scheme, host, port, *segments)`` for a remote git URL,
    ``("path", *parts)`` for a folder or ``file://`` repository (resolved), ``("pypi", name)``."""
    if text.startswith("pypi:"):
        return "pypi", canonicalize_name(pypi_requirement(text[5:], url).name)
    text = text.removeprefix("git+")
    scp = None if _SCHEME_URL.match(text) else _SCP_URL.match(text)
    if (scp or _SCHEME_URL.match(text) or text.startswith("file://")) and (
            text.startswith("-") or any(c.isspace() or ord(c) < 32 or c == "\\" for c in text)):
        raise ProviderSourceError(f"provider URL {url!r} starts with '-' or holds a space, a control character or '\\'")
    if scp:
        scheme, host, port, path = "ssh", scp["host"].lower(), 22, scp["path"]
    elif _SCHEME_URL.match(text):
        parts = urlsplit(text)
        try:
            scheme, host, explicit = parts.scheme.lower(), (parts.hostname or ""), parts.port
        except ValueError:
            raise ProviderSourceError(f"provider URL {url!r} has a malformed port") from None
        if parts.query or parts.fragment or "?" in text or "#" in text:
            raise ProviderSourceError(f"provider URL {url!r}: a query or fragment is not allowed")
        port, path = explicit or _DEFAULT_PORTS[scheme], parts.path
    elif text.startswith("file://"):
        path = text[len("file://") :]
        if not path.startswith("/"):
            raise ProviderSourceError(f"provider URL {url!r}: a file URL names an absolute path (file:///…)")
        _segments(path, url)
        return "path", *Path(unquote(path)).resolve().parts
    elif "://" in text:
        raise ProviderSourceError(f"unsupported provider URL scheme in {url!r}")
    else:
        return "path", *Path(text).expanduser().resolve().parts
    if not re.fullmatch(r"[a-z0-9_][a-z0-9_.-]*|\[[0-9a-f:.]+\]|[0-9a-f:.]+", host):
        raise ProviderSourceError(f"provider URL {url!r} has no valid host")
    segs = _segments(path, url)
    if segs:
        segs[-1] = segs[-1].removesuffix(".git") or segs[-1]
    return "url", scheme, host, str(port), *segs


def parse_source(url: str) -> Source:
    """Classify a provider/service URL (see the design's list of accepted forms)."""
    raw = url.strip() if isinstance(url, str) else ""
    if not raw:
        raise ProviderSourceError("empty provider URL")
    if raw.startswith("-"):
        raise ProviderSourceError(f"provider URL {url!r} starts with '-'")
    if raw.startswith("pypi:"):
        return Source(raw, "pypi", str(pypi_requirement(raw[5:], url)))
    if raw.startswith("git+") or _SCHEME_URL.match(raw) or _SCP_URL.match(raw):
        rest, sub = _split_fragment(raw, url)
        loc = rest.removeprefix("git+")
        tree = _GITHUB_TREE.match(loc)
        if tree and sub is None:  # GitHub's browser form: …/ORG/REPO/tree/REF/path/to/folder
            repo, ref, path = tree.groups()
            source = Source(raw, "git", repo, ref, _subdirectory(path, url) if path else None)
        else:
            loc, ref = _split_ref(loc)
            if not (_SCHEME_URL.match(loc) or _SCP_URL.match(loc) or loc.startswith("file://")):
                raise ProviderSourceError(f"unsupported git URL {url!r}: expected git+https://, git+ssh://, git+git://, "
                                          "git+file:// or git+user@host:path")
            source = Source(raw, "git", loc.rstrip("/"), ref, sub)
    elif raw.startswith("file://"):
        rest, sub = _split_fragment(raw, url)
        loc, ref = _split_ref(rest)
        path = loc[len("file://") :]
        if not path.rstrip("/").endswith(".git"):
            if sub is not None:
                raise ProviderSourceError(f"{url!r}: #subdirectory= is for git repositories (git+file://…); "
                                          "give a folder's own path")
            _locator(loc, url)
            return Source(raw, "path", str(Path(unquote(path)).resolve()))
        source = Source(raw, "git", loc, ref, sub)
    elif "://" in raw:
        raise ProviderSourceError(f"unsupported provider URL scheme in {url!r}")
    else:
        return Source(raw, "path", str(Path(raw).expanduser().resolve()))
    if source.ref is not None and (not _REF.match(source.ref) or ".." in source.ref or source.ref.endswith((".", "/"))):
        raise ProviderSourceError(f"provider URL {url!r}: {source.ref!r} is not a branch, tag or commit")
    _locator(source.location, url)  # refuses '..', encoded dots and slashes, bad hosts: always, allow-list or not
    github = source.location.split("/")
    if re.match(r"^https?://github\.com/", source.location, re.I) and (len(github) != 5 or not all(github[3:])):
        raise ProviderSourceError(f"malformed GitHub provider URL {url!r}: expected https://github.com/ORG/REPO"
                                  "[@REF][#subdirectory=PATH] or https://github.com/ORG/REPO/tree/REF/PATH")
    return source


def _allow_list() -> tuple[tuple[str, tuple[str, ...]], ...]:
    return _parsed_allow_list(get_settings().provider_allow or "")


@functools.lru_cache(maxsize=4)
def _parsed_allow_list(allow: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Parsed once per setting: producers and workers check every job's provider URL against it."""
    out = []
    for entry in (e.strip() for e in allow.split(",")):
        if entry:
            try:
                out.append((entry, _locator(entry, entry)))
            except ProviderSourceError as exc:
                raise ConfigurationError(f"MEDIACONDUIT_PROVIDER_ALLOW entry {entry!r} is malformed: {exc}") from None
    return tuple(out)


def check_allowed(url: str) -> None:
    """Enforce ``MEDIACONDUIT_PROVIDER_ALLOW`` before anything is fetched, on producers and workers alike.

    Entries are URL prefixes matched by scheme, host, port and whole path segments (``…/MediaConduit``
    does not admit ``…/MediaConduitEvil``); folders and ``file://`` by resolved path; ``pypi:NAME`` by
    the exact package name. Unset allows every URL.
    """
    allow = _allow_list()
    if not allow:
        return
    try:
        source = parse_source(url)
        loc = source.locator
    except ProviderSourceError as exc:
        raise ProviderNotAllowedError(f"{exc}; refused by MEDIACONDUIT_PROVIDER_ALLOW") from None
    for _, prefix in allow:
        if loc[: len(prefix)] == prefix:
            return
    raise ProviderNotAllowedError(f"provider URL {url!r} is not allowed by MEDIACONDUIT_PROVIDER_ALLOW")


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
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_ALLOW_PROTOCOL": GIT_PROTOCOLS}
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=_GIT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise ProviderSourceError(f"cannot fetch {strip_userinfo(url)!r}: git {args[0]} timed out after {_GIT_TIMEOUT}s") from None
    if proc.returncode != 0:
        detail = git_error_detail(proc.stderr, proc.returncode)
        raise ProviderSourceError(f"cannot fetch {strip_userinfo(url)!r}: git {args[0]}: {detail}")
    return proc.stdout.strip()


#: What git says went wrong, as opposed to the advice it ends with ("... and the repository exists.").
_GIT_CAUSES = re.compile(
    r"repository not found|could not resolve host|not a git repository|does not appear to be a git repository"
    r"|authentication failed|permission denied|connection refused|couldn't find remote ref",
    re.IGNORECASE,
)
_GIT_PREFIX = re.compile(r"^(fatal|error|remote):\s*", re.IGNORECASE)


def git_error_detail(stderr: str, returncode: int) -> str:
    """The line of git's error output that names the cause: a known cause, else the first ``fatal:`` line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    chosen = (next((line for line in lines if _GIT_CAUSES.search(line)), None)
              or next((line for line in lines if _GIT_PREFIX.match(line)), None)
              or (lines[-1] if lines else f"exit code {returncode}"))
    return _GIT_PREFIX.sub("", chosen)


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
        tree = self._checkout_dir(source, pin["commit"])
        return Checkout(source, _folder(source, tree, pin["commit"]), pin["commit"]) if tree.is_dir() else None

    def materialise(self, source: Source, update: bool = False) -> Checkout:
        """The source on disk at its pinned (or freshly resolved, when ``update``) commit."""
        if source.kind == "path":
            root = Path(source.location)
            if not root.is_dir():
                where = "" if source.url == source.location else f" ({source.location})"
                raise ProviderSourceError(f"provider folder {source.url!r}{where} does not exist on host "
                                          f"{socket.gethostname()!r} (a folder URL loads only where that path exists)")
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
            root = _folder(source, self._export(source, commit), commit)
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
                _git("clone", "--mirror", "--quiet", "--", source.location, str(tmp), url=source.url)
                os.replace(tmp, mirror)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        elif not (source.ref and _SHA.match(source.ref) and self._has(mirror, rev)):
            log.info("fetching %s", source.location)
            _git("remote", "update", "--prune", cwd=mirror, url=source.url)
        if not self._has(mirror, rev):
            raise ProviderSourceError(f"cannot fetch {strip_userinfo(source.url)!r}: no ref {source.ref or 'HEAD'!r} in the repository")
        return _git("rev-parse", "--verify", "--end-of-options", rev, cwd=mirror, url=source.url)

    @staticmethod
    def _has(mirror: Path, rev: str) -> bool:
        cmd = ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", rev]
        return subprocess.run(cmd, cwd=mirror, capture_output=True).returncode == 0

    def _export(self, source: Source, commit: str) -> Path:
        target = self._checkout_dir(source, commit)
        if target.is_dir():
            return target
        mirror = self.root / "git" / f"{source.key}.git"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
        try:
            archive = subprocess.run(["git", "archive", "--format=tar", "--end-of-options", commit], cwd=mirror,
                                     capture_output=True, check=True)
            extract_tree(archive.stdout, tmp, source.url)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def _folder(source: Source, tree: Path, commit: str) -> Path:
    """The source's folder inside the exported tree: its subdirectory, which must exist at that commit."""
    if not source.subdirectory:
        return tree
    folder = tree / source.subdirectory
    if not folder.resolve().is_relative_to(tree.resolve()):
        raise ProviderSourceError(f"{source.url!r}: subdirectory {source.subdirectory!r} leads outside the repository")
    if not folder.is_dir():
        raise ProviderSourceError(f"{source.url!r}: no folder {source.subdirectory!r} in the repository "
                                  f"at commit {commit[:12]}")
    return folder


def extract_tree(archive: bytes, dest: Path, url: str) -> None:
    """Unpack a ``git archive`` into ``dest``, refusing any path or link that leaves it, on every Python.

    (tarfile's "data" filter exists only from 3.11.4, and checks each link against what is on disk at
    the time.) Files and folders are written first, links last, so no write goes through a link; each
    link is then resolved with every other one in place and must stay inside ``dest``.
    """
    def refuse(member: str, why: str) -> ProviderSourceError:
        return ProviderSourceError(f"cannot export {url!r}: member {member!r} {why}")

    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            members = tar.getmembers()
            links: dict[str, str] = {}
            for m in members:
                parts = m.name.rstrip("/").split("/")
                if m.name.startswith("/") or any(p in ("", ".", "..") for p in parts) or ".git" in (p.lower() for p in parts):
                    raise refuse(m.name, "has an absolute path, a '.', '..' or '.git' segment")
                if m.issym():
                    links[m.name] = m.linkname
                elif not (m.isfile() or m.isdir()) and m.type != tarfile.XGLTYPE:
                    raise refuse(m.name, "is neither a file, a folder nor a symbolic link")
            for m in members:
                parents = m.name.rstrip("/").split("/")[:-1]
                if any("/".join(parents[: i + 1]) in links for i in range(len(parents))):
                    raise refuse(m.name, "lies under a symbolic link")
                path = dest / m.name
                if m.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                elif m.isfile():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    stream = tar.extractfile(m)
                    assert stream is not None
                    with open(path, "xb") as out:
                        shutil.copyfileobj(stream, out)
                    path.chmod(0o755 if m.mode & 0o111 else 0o644)
            for name, target in links.items():
                if target.startswith("/"):
                    raise refuse(name, f"is a link to the absolute path {target!r}")
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, dest / name)
            root = dest.resolve()
            for name, target in links.items():
                if not Path(os.path.realpath(dest / name)).is_relative_to(root):
                    raise refuse(name, f"is a link to {target!r}, outside the repository")
    except (tarfile.TarError, OSError) as exc:
        raise ProviderSourceError(f"cannot export {url!r}: {type(exc).__name__}: {exc}") from None


def _folder_commit(root: Path) -> str | None:
    """The git HEAD of a provider folder, when it is a work tree; None otherwise."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:  # no git on this machine: folders still load
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None
