"""Content-addressed blob store: binary media travel by reference, never inside the result backend.

A blob is named by the SHA-256 of its bytes, and reading one checks them against that name, so a
reference a job hands in can only ever yield the bytes it names. Every write goes through a temporary
file under ``incoming/`` that is renamed into place on success and removed on any failure, including a
size cap (``limit``) hit mid-stream: nothing partial is ever left under ``sha256/``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import unquote, urlparse

from .errors import InvalidInputError, MediaLimitError
from .settings import get_settings

SCHEME = "blob"
CHUNK = 1 << 20
"""Bytes per read/write when copying files and streams: memory stays flat for media of any size."""
INCOMING = "incoming"
"""Folder of the store holding writes in progress (``.tmp-*``), renamed into ``sha256/`` when complete."""
#: The one form of a blob reference: ``blob://sha256/<64 lower-case hex digits>``.
BLOB_URI = re.compile(r"^blob://sha256/(?P<digest>[0-9a-f]{64})$")


def blob_digest(uri: str) -> str | None:
    """The digest named by a well-formed ``blob://`` reference, else None."""
    m = BLOB_URI.match(uri)
    return m.group("digest") if m else None


class BlobStore:
    """Files named by their SHA-256 under one folder, which several machines may share."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else get_settings().blobs

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256

    def missing(self, uri: str) -> InvalidInputError:
        """The error of a reference this store lacks, naming the blob and the folder looked in: the usual
        cause is a machine that wrote it to a store this one does not share."""
        return InvalidInputError(f"blob {uri} is not in the blob store {self.root} (MEDIACONDUIT_BLOB_DIR): it was "
                                 "written to a store this machine does not share")

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def claim(self, sha256: str) -> bool:
        """Whether the blob is in the store; if so its time is set to now, so garbage collection keeps it
        for another grace period (a job that reads it holds a reference Redis may no longer show)."""
        try:
            os.utime(self.path_for(sha256))
        except FileNotFoundError:
            return False
        return True

    def put(self, data: bytes, limit: int | None = None, what: str = "the blob") -> tuple[str, str]:
        """Store ``data`` once (atomic rename, so concurrent writers are safe); return (uri, sha256).
        Over ``limit`` bytes (see ``BlobWriter``) nothing is written."""
        if limit is not None and len(data) > limit:
            raise over_output_cap(what, limit, len(data))
        digest = hashlib.sha256(data).hexdigest()
        if not self.claim(digest):  # stored already: claimed afresh, as a new write would be
            self.put_stream([data])
        return f"{SCHEME}://sha256/{digest}", digest

    def writer(self, limit: int | None = None, what: str = "the blob") -> BlobWriter:
        """A file in the store hashed while it is written: ``with store.writer() as w: w.write(...)``,
        then ``w.uri``. For outputs too large to hold in memory (ffmpeg results, downloads). A write
        that would pass ``limit`` bytes raises ``MediaLimitError`` and discards the file."""
        return BlobWriter(self, limit, what)

    def put_stream(self, chunks: Iterable[bytes], limit: int | None = None, what: str = "the blob") -> tuple[str, str, int]:
        """Store bytes as they arrive, hashing while writing; return (uri, sha256, size).

        Nothing is kept when ``chunks`` raises (e.g. a size cap or a deadline enforced by the caller)
        or when they pass ``limit`` bytes.
        """
        with self.writer(limit, what) as w:
            for chunk in chunks:
                w.write(chunk)
        return w.uri, w.sha256, w.size

    def put_file(self, path: Path | str) -> tuple[str, str, int]:
        """Copy a local file into the store in chunks (never whole in memory); return (uri, sha256, size)."""
        with open(path, "rb") as fh:
            return self.put_stream(iter(lambda: fh.read(CHUNK), b""))

    def incoming_file(self) -> Path:
        """A new empty file under ``incoming/`` for a writer that needs a seekable file of its own (the C2PA
        signer); ``adopt`` it when complete, or unlink it."""
        incoming = self.root / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=incoming, prefix=".tmp-")
        os.close(fd)
        return Path(name)

    def adopt(self, path: Path) -> tuple[str, str, int]:
        """Move a complete file of ``incoming/`` into the store under its digest, hashed in chunks (no copy);
        return (uri, sha256, size)."""
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        target = self.path_for(digest.hexdigest())
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return f"{SCHEME}://sha256/{digest.hexdigest()}", digest.hexdigest(), size

    def get(self, uri: str) -> bytes:
        """The bytes of a ``blob://`` reference, checked against its digest; trusted code (providers,
        an operator's scripts) may also read a ``file://`` URL or a plain path. Job JSON never gets
        here with anything but a blob reference (see ``assets.asset_from_json``)."""
        digest = blob_digest(uri)
        if digest is not None:
            try:
                data = self.path_for(digest).read_bytes()
            except FileNotFoundError:
                raise self.missing(uri) from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise InvalidInputError(f"blob {uri!r} in {self.root} does not match its digest: the stored copy is damaged")
            return data
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            return Path(unquote(parsed.path)).read_bytes()
        if parsed.scheme == "" and uri:
            return Path(uri).read_bytes()
        raise InvalidInputError(f"unsupported blob uri {uri!r}: expected blob://sha256/<hex>")


def over_output_cap(what: str, limit: int, size: int | None = None) -> MediaLimitError:
    """The error of an asset over ``MEDIACONDUIT_MAX_OUTPUT_BYTES`` (``size`` when it is known)."""
    held = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return MediaLimitError(f"{what} holds {held}, over the output cap of {limit:,} bytes "
                           "(MEDIACONDUIT_MAX_OUTPUT_BYTES); nothing of it was kept in the blob store")


class BlobWriter:
    """A temporary file in the store that becomes ``sha256/<digest>`` on a clean close (discarded on
    error). With ``limit``, the write that would pass it stops there: the file is removed at once and
    ``MediaLimitError`` names ``what`` and the cap."""

    def __init__(self, store: BlobStore, limit: int | None = None, what: str = "the blob") -> None:
        self.store = store
        self.limit = limit
        self.what = what
        self._hash = hashlib.sha256()
        self.size = 0
        self.sha256 = ""
        self.uri = ""
        incoming = store.root / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=incoming, prefix=".tmp-")
        self._fh: IO[bytes] = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if self.limit is not None and self.size + len(chunk) > self.limit:
            self._discard()
            raise over_output_cap(self.what, self.limit)
        self._hash.update(chunk)
        self._fh.write(chunk)
        self.size += len(chunk)

    def _discard(self) -> None:
        self._fh.close()
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:  # already discarded by a write over the limit
            pass

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            self._discard()
            return
        self._fh.close()
        self.sha256 = self._hash.hexdigest()
        target = self.store.path_for(self.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, target)  # same content, same name: a concurrent writer of it is harmless
        self.uri = f"{SCHEME}://sha256/{self.sha256}"
