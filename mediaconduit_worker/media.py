"""Media of any size: file-backed assets, streamed uploads and downloads through the blob store.

A 500 MB video never sits in a worker's memory: producers hand files over with ``Video.from_path``
(copied into the shared store in chunks), providers read it with ``asset.open()``/``asset.path()``,
upload it with ``FileBody`` (a re-iterable body, so an HTTP retry can send it again) and save what
comes back with ``save_response``/``download``, hashing while they write.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import httpx

from .blobs import CHUNK, SCHEME, BlobStore
from .errors import InvalidInputError, ProviderResponseError, TransientError

if TYPE_CHECKING:
    from .assets import BinaryAsset
    from .http import HttpClient

A = TypeVar("A", bound="BinaryAsset")

# Python's table lacks or misnames a few media types services care about.
MIME_BY_SUFFIX = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg",
                  ".flac": "audio/flac", ".m4a": "audio/mp4", ".weba": "audio/webm", ".opus": "audio/ogg",
                  ".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska", ".mov": "video/quicktime",
                  ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
SUFFIX_BY_MIME = {mime: suffix for suffix, mime in reversed(MIME_BY_SUFFIX.items())}


def guess_mime(name: str, default: str) -> str:
    """The media type a file name suggests, else ``default``."""
    suffix = Path(urlparse(name).path).suffix.lower()
    return MIME_BY_SUFFIX.get(suffix) or mimetypes.guess_type(name)[0] or default


def suffix_for(mime_type: str) -> str:
    """A file suffix for a media type (``.bin`` when unknown), for services that look at names."""
    return SUFFIX_BY_MIME.get(mime_type.split(";")[0].strip()) or mimetypes.guess_extension(mime_type) or ".bin"


def asset_from_path(cls: type[A], path: str | Path, mime_type: str | None = None, **kwargs: Any) -> A:
    """``cls`` backed by a copy of ``path`` in the blob store, never read whole into memory."""
    source = Path(path)
    if not source.is_file():
        raise InvalidInputError(f"{cls.__name__}.from_path: {source} is not a readable file")
    uri, digest, size = BlobStore().put_file(source)
    return cls(uri=uri, sha256=digest, size=size, mime_type=mime_type or guess_mime(source.name, cls.default_mime),
               **kwargs)


def blob_path(uri: str) -> Path:
    """The store's file for a ``blob://sha256/<hex>`` reference; a clear error when it is missing."""
    parsed = urlparse(uri)
    if parsed.scheme != SCHEME:
        raise InvalidInputError(f"{uri!r} is not a blob reference (blob://sha256/<hex>)")
    store = BlobStore()
    path = store.path_for(parsed.path.rsplit("/", 1)[-1])
    if not path.is_file():
        raise InvalidInputError(f"blob {uri!r} is not in the store {store.root}")
    return path


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
    """Stream an open response's body into the blob store as a ``cls`` asset (hashed while written)."""
    mime = mime_type or response.headers.get("content-type", "").split(";")[0].strip() or cls.default_mime
    store = BlobStore()
    try:
        with store.writer() as w:
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
