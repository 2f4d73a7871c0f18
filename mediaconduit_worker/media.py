"""Media of any size: streamed uploads and downloads through the blob store.

A 500 MB video never sits in a worker's memory: producers hand files over with ``Video.from_path``
(copied into the shared store in chunks), providers read it with ``asset.open()``/``asset.path()``
(both in ``assets.py``), upload it with ``FileBody`` (a re-iterable body, so an HTTP retry can send it
again) and save what comes back with ``save_response``/``download``, hashing while they write.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from .assets import BinaryAsset, guess_mime
from .blobs import CHUNK, BlobStore, over_output_cap
from .errors import ProviderResponseError, TransientError
from .http import HttpClient
from .settings import get_settings

A = TypeVar("A", bound=BinaryAsset)


class FileBody:
    """An HTTP request body read from a file in chunks; iterable again, so a retried request resends it.
    Send it with ``headers()`` (a Content-Length, so the body is not chunk-encoded)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    def headers(self, content_type: str) -> dict[str, str]:
        return {"Content-Length": str(self.size), "Content-Type": content_type}


def save_response(response: httpx.Response, cls: type[A], mime_type: str | None = None, *, what: str,
                  **kwargs: Any) -> A:
    """Stream an open response's body into the blob store as a ``cls`` asset (hashed while written).

    A job's output is capped by ``MEDIACONDUIT_MAX_OUTPUT_BYTES``: a declared length over it is refused
    before a byte is read, and an undeclared one stops at the cap; nothing partial is kept.
    """
    mime = mime_type or response.headers.get("content-type", "").split(";")[0].strip() or cls.default_mime
    store = BlobStore()
    limit = get_settings().max_output_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        response.close()
        raise over_output_cap(f"{what}: the output", limit, int(declared))
    try:
        with store.writer(limit, f"{what}: the output") as w:
            for chunk in response.iter_bytes(CHUNK):
                w.write(chunk)
    except httpx.TimeoutException:
        raise TransientError(f"{what}: the download stalled") from None
    except httpx.TransportError as exc:
        raise TransientError(f"{what}: the download broke: {type(exc).__name__}: {exc}") from None
    finally:
        response.close()
    if w.size == 0:
        raise ProviderResponseError(f"{what}: the response body is empty")
    return cls(uri=w.uri, sha256=w.sha256, size=w.size, mime_type=mime, **kwargs)


def download(client: HttpClient, url: str, cls: type[A], *, what: str, timeout: float | None = None,
             **kwargs: Any) -> A:
    """A file an API points at, streamed into the blob store; the media type from the response or the name."""
    response = client.open_stream("GET", url, timeout=timeout)
    mime = response.headers.get("content-type", "").split(";")[0].strip()
    if not mime or mime in ("application/octet-stream", "binary/octet-stream"):
        mime = guess_mime(url, cls.default_mime)
    return save_response(response, cls, mime, what=what, **kwargs)
