"""Sources on disk: a bare mirror per git repository, each pinned commit exported once (a tar of it,
unpacked with every path checked), pins shared by every process through flock."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import posixpath
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

from ..errors import ProviderSourceError
from ..redaction import redact_url
from ..settings import get_settings
from .git import git
from .urls import SHA, Source, is_relative, stable_id

log = logging.getLogger(__name__)
#: The refs a mirror holds: what the repository's maintainers published, not ``refs/pull/*``.
PUBLISHED_REFS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
#: Where a mirror keeps the commit the repository's HEAD named at the last fetch (a URL without a ref).
REMOTE_HEAD = "refs/mediaconduit/remote-head"
#: Files in a mirror holding when it was last fetched, and last fetched for a ref it lacked.
FETCHED_AT, MISSED_AT = "mediaconduit-fetched-at", "mediaconduit-missed-at"


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
    locks = get_settings().cache_dir / "locks"
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


class SourceCache:
    """Mirrors git sources under ``cache/git``, exports each pinned commit once under ``cache/checkouts``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or get_settings().cache_dir

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
        if refresh and not SHA.match(source.ref or "") and time.time() - pin.get("fetched_at", 0) > refresh:
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
            commit = self._fetch(source, update)
            root = _folder(source, self._export(source, commit), commit)
            pin = {"url": source.url, "ref": source.ref, "commit": commit, "fetched_at": time.time()}
            self._pin_path(source).parent.mkdir(parents=True, exist_ok=True)
            tmp = self._pin_path(source).with_suffix(".tmp")
            tmp.write_text(json.dumps(pin))
            os.replace(tmp, self._pin_path(source))
            return Checkout(source, root, commit)

    def _mirror(self, source: Source) -> Path:
        return self.root / "git" / f"{source.key}.git"

    def _fetch(self, source: Source, update: bool) -> str:
        """The commit ``source`` names, fetched if need be; only a commit on a branch or tag is returned.

        The mirror holds the repository's branches and tags and nothing else (a ``--mirror`` clone would
        also copy ``refs/pull/*``, where anyone can publish a commit). A ref the mirror lacks sends git to
        the repository at most once per ``MEDIACONDUIT_SOURCE_FETCH_INTERVAL``, however many jobs ask
        (a random SHA per job makes one fetch per interval); a branch is refreshed at most as often.
        """
        mirror = self._mirror(source)
        rev = f"{source.ref or REMOTE_HEAD}^{{commit}}"
        unsearched = ""  # why a missing ref was not looked for at the repository just now
        if not mirror.is_dir():
            log.info("cloning %s", redact_url(source.location))
            mirror.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=mirror.parent, prefix=".clone-"))
            try:
                git("init", "--bare", "--quiet", str(tmp), url=source.url)
                self._fetch_published(tmp, source)
                os.replace(tmp, mirror)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            known, interval = self._has(mirror, rev), get_settings().source_fetch_interval
            if known:  # a stale branch pin, or a new spelling of the URL: the mirror may be fresh enough
                due = not SHA.match(source.ref or "") and time.time() - _stamp(mirror, FETCHED_AT) >= interval
            else:  # a commit pushed since, or a random one: look once, then not again within the interval
                due = time.time() - _stamp(mirror, MISSED_AT) >= interval
            if update or due:
                log.info("fetching %s", redact_url(source.location))
                if not known:
                    (mirror / MISSED_AT).write_text(str(time.time()))
                self._fetch_published(mirror, source)
            elif not known:
                unsearched = (f" (the repository was searched for a missing ref {time.time() - _stamp(mirror, MISSED_AT):.0f}s "
                              f"ago; again after MEDIACONDUIT_SOURCE_FETCH_INTERVAL={interval}s)")
        shown = redact_url(source.url)
        if not self._has(mirror, rev):
            if SHA.match(source.ref or ""):
                raise ProviderSourceError(f"cannot fetch {shown!r}: commit {source.ref} is on no branch or tag of "
                                          f"the repository (only published code runs){unsearched}")
            raise ProviderSourceError(f"cannot fetch {shown!r}: no branch or tag {source.ref or 'HEAD'!r} in the "
                                      f"repository{unsearched}")
        commit = git("rev-parse", "--verify", "--end-of-options", rev, cwd=mirror, url=source.url)
        if not git("for-each-ref", "--count=1", "--format=%(refname)", f"--contains={commit}", "refs/heads/",
                   "refs/tags/", cwd=mirror, url=source.url):
            raise ProviderSourceError(f"cannot fetch {shown!r}: commit {commit} is on no branch or tag of the "
                                      "repository (only published code runs)")
        return commit

    @staticmethod
    def _fetch_published(mirror: Path, source: Source) -> None:
        """Fetch the repository's branches, tags and HEAD into ``mirror`` (a HEAD naming no commit yet, as
        in a repository nothing was pushed to, is left out)."""
        def fetch(*refspecs: str) -> None:
            git("fetch", "--quiet", "--prune", "--no-tags", "--", source.location, *refspecs, cwd=mirror, url=source.url)

        try:
            fetch(*PUBLISHED_REFS, f"+HEAD:{REMOTE_HEAD}")
        except ProviderSourceError as exc:
            if "couldn't find remote ref HEAD" not in str(exc):
                raise
            fetch(*PUBLISHED_REFS)
        (mirror / FETCHED_AT).write_text(str(time.time()))

    @staticmethod
    def _has(mirror: Path, rev: str) -> bool:
        cmd = ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", rev]
        return subprocess.run(cmd, cwd=mirror, capture_output=True).returncode == 0

    def _export(self, source: Source, commit: str) -> Path:
        target = self._checkout_dir(source, commit)
        if target.is_dir():
            return target
        mirror = self._mirror(source)
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


def _stamp(mirror: Path, name: str) -> float:
    try:
        return float((mirror / name).read_text())
    except (FileNotFoundError, ValueError):
        return 0.0


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
