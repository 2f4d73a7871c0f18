"""Content-addressed blob store: binary media travel by reference, never inside the result backend."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import urlparse

from .settings import get_settings

SCHEME = "blob"
CHUNK = 1 << 20
"""Bytes per read/write when copying files and streams: memory stays flat for media of any size."""


class BlobStore:
    """Files named by their SHA-256 under one folder, which several machines may share."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else get_settings().blobs

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256

    def put(self, data: bytes) -> tuple[str, str]:
        """Store ``data`` once (atomic rename, so concurrent writers are safe); return (uri, sha256)."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        return f"{SCHEME}://sha256/{digest}", digest

    def writer(self) -> BlobWriter:
        """A file in the store hashed while it is written: ``with store.writer() as w: w.write(...)``,
        then ``w.uri``. For outputs too large to hold in memory (ffmpeg results, downloads)."""
        return BlobWriter(self)

    def put_stream(self, chunks: Iterable[bytes]) -> tuple[str, str, int]:
        """Store a stream of byte chunks without holding it whole; return (uri, sha256, size)."""
        with self.writer() as w:
            for chunk in chunks:
                w.write(chunk)
        return w.uri, w.sha256, w.size

    def put_file(self, path: Path | str) -> tuple[str, str, int]:
        """Copy a local file into the store in chunks (never whole in memory); return (uri, sha256, size)."""
        with open(path, "rb") as fh:
            return self.put_stream(iter(lambda: fh.read(CHUNK), b""))

    def get(self, uri: str) -> bytes:
        """Read a ``blob://``, ``file://`` or plain-path reference."""
        parsed = urlparse(uri)
        if parsed.scheme == SCHEME:
            path = self.path_for(parsed.path.rsplit("/", 1)[-1])
        elif parsed.scheme in ("file", ""):
            path = Path(parsed.path)
        elif parsed.scheme in ("http", "https"):
            import httpx

            response = httpx.get(uri, timeout=60, follow_redirects=True)
            response.raise_for_status()
            return response.content
        else:
            raise ValueError(f"unsupported blob uri {uri!r}")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"blob {uri!r} not found in store {self.root}") from None


class BlobWriter:
    """A temporary file in the store that becomes ``sha256/<digest>`` on a clean close (discarded on error)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._hash = hashlib.sha256()
        self.size = 0
        self.sha256 = ""
        self.uri = ""
        incoming = store.root / "sha256"
        incoming.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=incoming, prefix=".tmp-")
        self._fh: IO[bytes] = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._fh.write(chunk)
        self.size += len(chunk)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._fh.close()
        if kind is not None:
            os.unlink(self._tmp)
            return
        self.sha256 = self._hash.hexdigest()
        target = self.store.path_for(self.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, target)  # same content, same name: a concurrent writer of it is harmless
        self.uri = f"{SCHEME}://sha256/{self.sha256}"
