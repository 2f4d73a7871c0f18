"""Content-addressed blob store: binary media travel by reference, never inside the result backend."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from .settings import get_settings

SCHEME = "blob"


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
