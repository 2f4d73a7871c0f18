"""Content-addressed blob store: binary media travel by reference, never inside the result backend.

A blob is named by the SHA-256 of its bytes, and reading one checks them against that name, so a
reference a job hands in can only ever yield the bytes it names.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import InvalidInputError
from .settings import get_settings

SCHEME = "blob"
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

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put(self, data: bytes) -> tuple[str, str]:
        """Store ``data`` once (atomic rename, so concurrent writers are safe); return (uri, sha256)."""
        digest = hashlib.sha256(data).hexdigest()
        if not self.path_for(digest).exists():
            self.put_stream([data])
        return f"{SCHEME}://sha256/{digest}", digest

    def put_stream(self, chunks: Iterable[bytes]) -> tuple[str, str, int]:
        """Store bytes as they arrive, hashing while writing; return (uri, sha256, size).

        Nothing is kept when ``chunks`` raises (e.g. a size cap or a deadline enforced by the caller).
        """
        incoming = self.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=incoming, prefix=".tmp-")
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    fh.write(chunk)
                    size += len(chunk)
            target = self.path_for(digest.hexdigest())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
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
                raise InvalidInputError(f"blob {uri!r} is not in the blob store {self.root}") from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise InvalidInputError(f"blob {uri!r} in {self.root} does not match its digest: the stored copy is damaged")
            return data
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            return Path(unquote(parsed.path)).read_bytes()
        if parsed.scheme == "" and uri:
            return Path(uri).read_bytes()
        raise InvalidInputError(f"unsupported blob uri {uri!r}: expected blob://sha256/<hex>")
