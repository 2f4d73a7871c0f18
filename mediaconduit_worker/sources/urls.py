"""The grammar of provider and service URLs: which forms are accepted, what each names, what an
allow-list compares. Pure parsing: nothing here touches the network or the disk (but for resolving a
folder's path)."""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import ProviderSourceError

SHA = re.compile(r"^[0-9a-f]{40}$")
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
        """The repository (not the folder in it): one mirror and one export per commit serve all its folders.
        A git repository is named by its locator, so the spellings of one URL (host case, ``.git``, the
        default port, userinfo) share one mirror."""
        if self.kind == "git":
            return stable_id("git:" + "/".join(self.locator))
        return stable_id(f"{self.kind}:{self.location}")

    def at(self, commit: str, subdirectory: str | None) -> str:
        """The URL of another folder of this git repository, pinned to ``commit`` (pip's VCS form)."""
        repository = ("git+" if self.url.startswith("git+") else "") + self.location
        return f"{repository}@{commit}" + (f"#subdirectory={subdirectory}" if subdirectory else "")

    @property
    def locator(self) -> tuple[str, ...]:
        """What ``MEDIACONDUIT_PROVIDER_ALLOW`` compares (see ``check_allowed``)."""
        return locator_of(("pypi:" if self.kind == "pypi" else "") + self.location, self.url)


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


class UnsafeSegment(ValueError):
    """A path segment that could step out of an allowed prefix once a server decodes it (``args[0]``)."""

    def __str__(self) -> str:
        return (f"path segment {self.args[0]!r} is refused ('.' and '..' segments, also percent-encoded or "
                "before a ';', encoded slashes or backslashes, a '%' left after decoding and bytes that are not "
                "UTF-8 are not allowed)")


def path_segments(path: str) -> list[str]:
    """The decoded, non-empty segments of a URL path as written, what an allow-list compares whole
    (``/public`` is not a prefix of ``/public-internal``); raises ``UnsafeSegment``."""
    out = []
    for raw in path.split("/"):
        try:
            seg = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise UnsafeSegment(raw) from None
        if seg.split(";")[0] in (".", "..") or any(c in seg for c in "/\\%"):
            raise UnsafeSegment(raw)
        if seg:
            out.append(seg)
    return out


def _segments(path: str, url: str) -> list[str]:
    try:
        return path_segments(path)
    except UnsafeSegment as exc:
        raise ProviderSourceError(f"provider URL {url!r}: {exc}") from None


def locator_of(text: str, url: str) -> tuple[str, ...]:
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
            locator_of(loc, url)
            return Source(raw, "path", str(Path(unquote(path)).resolve()))
        source = Source(raw, "git", loc, ref, sub)
    elif "://" in raw:
        raise ProviderSourceError(f"unsupported provider URL scheme in {url!r}")
    else:
        return Source(raw, "path", str(Path(raw).expanduser().resolve()))
    if source.ref is not None and (not _REF.match(source.ref) or ".." in source.ref or source.ref.endswith((".", "/"))):
        raise ProviderSourceError(f"provider URL {url!r}: {source.ref!r} is not a branch, tag or commit")
    locator_of(source.location, url)  # refuses '..', encoded dots and slashes, bad hosts: always, allow-list or not
    github = source.location.split("/")
    if re.match(r"^https?://github\.com/", source.location, re.I) and (len(github) != 5 or not all(github[3:])):
        raise ProviderSourceError(f"malformed GitHub provider URL {url!r}: expected https://github.com/ORG/REPO"
                                  "[@REF][#subdirectory=PATH] or https://github.com/ORG/REPO/tree/REF/PATH")
    return source
