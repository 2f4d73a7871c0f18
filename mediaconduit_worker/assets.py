"""Media assets: what models take and return. Text is inline; binary media may be a blob reference.

An asset in a job's JSON comes from an untrusted submitter: ``asset_from_json`` accepts inline bytes,
a ``blob://`` reference or an operator-allowed URL, never a path on the worker. Trusted code (providers,
an operator's scripts) may still build an asset from a file: ``Image(uri="/path/x.png")``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar, Self, TypeVar
from urllib.parse import unquote_to_bytes, urlparse

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from .blobs import BlobStore, blob_digest
from .errors import InvalidInputError
from .mediainfo import check_media
from .settings import get_settings

T = TypeVar("T")

# Python's table lacks or misnames a few media types services care about.
MIME_BY_SUFFIX = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg",
                  ".flac": "audio/flac", ".m4a": "audio/mp4", ".weba": "audio/webm", ".opus": "audio/ogg",
                  ".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska", ".mov": "video/quicktime",
                  ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def guess_mime(name: str, default: str) -> str:
    """The media type a file name (or a URL's path) suggests, else ``default``."""
    suffix = Path(urlparse(name).path).suffix.lower()
    return MIME_BY_SUFFIX.get(suffix) or mimetypes.guess_type(name)[0] or default


class Asset(BaseModel):
    """Common part: ``metadata`` (holds ``generation_prompt``) and ``source`` (the asset it came from)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    type: ClassVar[str]
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: Any = None

    @property
    def generation_prompt(self) -> dict[str, Any] | None:
        return self.metadata.get("generation_prompt")

    def to_json(self, with_prompt: bool = True) -> dict[str, Any]:
        """The asset's one JSON form (results, generation prompts, chain inputs); binary media are
        stored as a blob first. ``with_prompt=False`` leaves out the generation prompt, which a
        result carries beside the asset."""
        raise NotImplementedError

    def _metadata(self, with_prompt: bool) -> dict[str, Any]:
        return dict(self.metadata) if with_prompt else {k: v for k, v in self.metadata.items() if k != "generation_prompt"}


class Text(Asset):
    type: ClassVar[str] = "text"
    content: str
    language: str = "auto"
    confidence: float = 1.0

    @classmethod
    def from_string(
        cls,
        content: str,
        language: str = "auto",
        confidence: float = 1.0,
        metadata: dict[str, Any] | None = None,
        source: Asset | None = None,
    ) -> Text:
        return cls(content=content, language=language, confidence=confidence, metadata=metadata or {}, source=source)

    def __str__(self) -> str:
        return self.content

    def to_json(self, with_prompt: bool = True) -> dict[str, Any]:
        return {"type": "text", "content": self.content, "language": self.language,
                "metadata": self._metadata(with_prompt)}


class BinaryAsset(Asset):
    """Bytes in memory or a blob reference (``uri``); ``data`` loads the reference on first use."""

    default_mime: ClassVar[str] = "application/octet-stream"
    mime_type: str = ""
    uri: str | None = None
    sha256: str | None = None
    size: int | None = None
    _data: bytes | None = PrivateAttr(default=None)

    def __init__(self, data: bytes | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.mime_type:
            self.mime_type = self.default_mime
        if data is None and self.uri is None:
            raise ValueError(f"{type(self).__name__} needs bytes or a blob uri")
        if data is not None:
            self._data = bytes(data)
            self.sha256 = hashlib.sha256(self._data).hexdigest()
            self.size = len(self._data)

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str | None = None, **kwargs: Any) -> BinaryAsset:
        return cls(data=data, mime_type=mime_type or cls.default_mime, **kwargs)

    @property
    def data(self) -> bytes:
        if self._data is None:
            assert self.uri is not None
            self._data = BlobStore().get(self.uri)
            self.size = len(self._data)
        return self._data

    def store(self, store: BlobStore | None = None) -> str:
        """Put the bytes in the blob store (once) and remember the reference; bytes over
        ``MEDIACONDUIT_MAX_OUTPUT_BYTES`` are refused, unwritten."""
        if self.uri is None or not self.uri.startswith("blob://"):
            self.uri, self.sha256 = (store or BlobStore()).put(
                self.data, get_settings().max_output_bytes, f"the {self.type} asset ({self.mime_type})")
            self.size = len(self.data)
        return self.uri

    # File-backed use: media of any size never has to fit in memory.
    @classmethod
    def from_path(cls, path: str | Path, mime_type: str | None = None, **kwargs: Any) -> Self:
        """A local file copied into the shared blob store in chunks; the asset holds only its reference.
        For trusted producer and provider code: job JSON never carries paths."""
        source = Path(path)
        if not source.is_file():
            raise InvalidInputError(f"{cls.__name__}.from_path: {source} is not a readable file")
        uri, digest, size = BlobStore().put_file(source)
        return cls(uri=uri, sha256=digest, size=size, mime_type=mime_type or guess_mime(source.name, cls.default_mime),
                   **kwargs)

    def path(self) -> Path:
        """The asset's file in the blob store (stored first when it holds bytes); a clear error when a
        reference names a blob the store lacks."""
        uri, store = self.store(), BlobStore()
        path = store.path_for(uri.rsplit("/", 1)[-1])
        if not path.is_file():
            raise store.missing(uri)
        return path

    def open(self) -> IO[bytes]:
        """A binary stream of the content, read from the blob store when the asset is a reference."""
        return io.BytesIO(self._data) if self._data is not None else self.path().open("rb")

    def to_json(self, with_prompt: bool = True) -> dict[str, Any]:
        self.store()
        return {
            "type": self.type,
            "uri": self.uri,
            "sha256": self.sha256,
            "size": self.size,
            "mime_type": self.mime_type,
            "metadata": self._metadata(with_prompt),
        }


class Audio(BinaryAsset):
    type: ClassVar[str] = "audio"
    default_mime: ClassVar[str] = "audio/wav"


class Image(BinaryAsset):
    type: ClassVar[str] = "image"
    default_mime: ClassVar[str] = "image/png"


class Video(BinaryAsset):
    type: ClassVar[str] = "video"
    default_mime: ClassVar[str] = "video/mp4"


ASSET_TYPES: dict[str, type[Asset]] = {"text": Text, "audio": Audio, "image": Image, "video": Video}


def _decode_base64(text: Any, where: str) -> bytes:
    """Inline bytes, checked against ``MEDIACONDUIT_MAX_INLINE_BYTES`` before they are decoded."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{where} must be a base64 string, got {type(text).__name__}")
    limit = get_settings().max_inline_bytes
    if len(text) // 4 * 3 > limit:
        raise InvalidInputError(f"{where} holds about {len(text) // 4 * 3:,} bytes, more than MEDIACONDUIT_MAX_INLINE_BYTES "
                                f"allows ({limit:,}); send large media as a blob:// reference or an allowed URL")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise InvalidInputError(f"{where} is not valid base64: {exc}") from None


def _decode_data_url(url: str, where: str) -> tuple[bytes, str]:
    """The bytes and media type of a ``data:[<type>][;base64],<data>`` URL."""
    header, sep, body = url[len("data:"):].partition(",")
    if not sep:
        raise InvalidInputError(f"{where}: a data: URL needs a ',' before its data")
    params = header.split(";")
    mime = params[0].strip() or "text/plain"
    if params[-1].strip().lower() == "base64":
        return _decode_base64(body, where), mime
    limit = get_settings().max_inline_bytes
    if len(body) > 3 * limit:  # percent-encoding takes at most three characters a byte
        raise InvalidInputError(f"{where}: the data: URL is longer than MEDIACONDUIT_MAX_INLINE_BYTES allows ({limit:,})")
    data = unquote_to_bytes(body)
    if len(data) > limit:
        raise InvalidInputError(f"{where}: the data: URL holds {len(data):,} bytes, more than "
                                f"MEDIACONDUIT_MAX_INLINE_BYTES allows ({limit:,})")
    return data, mime


def binary_source(value: dict[str, Any], where: str) -> tuple[str, Any]:
    """Where a job's binary asset comes from, checked without reading or fetching anything:
    ``("bytes", (data, mime))`` for inline data, ``("blob", digest)`` or ``("url", url)``.

    A job submitter is not trusted: file paths and ``file://`` URLs (the worker's own files, such as
    ``/proc/self/environ``) are refused here; only trusted code builds assets from files.
    """
    data, uri = value.get("data"), value.get("uri")
    if data is not None and uri is not None:
        raise InvalidInputError(f"{where}: give either 'data' (base64) or 'uri', not both")
    if data is not None:
        return "bytes", (_decode_base64(data, f"{where} field 'data'"), None)
    if not isinstance(uri, str) or not uri:
        raise InvalidInputError(f"{where} needs 'data' (base64) or a 'uri' (blob://sha256/<hex>, a data: URL "
                                "or an allowed http(s) URL)")
    field = f"{where} field 'uri'"
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme == "data":
        return "bytes", _decode_data_url(uri, field)
    if scheme == "blob":
        digest = blob_digest(uri)
        if digest is None:
            raise InvalidInputError(f"{field}: {uri[:120]!r} is not a blob reference (blob://sha256/<64 hex digits>)")
        claimed = value.get("sha256")
        if claimed is not None and claimed != digest:
            raise InvalidInputError(f"{where} field 'sha256': {claimed!r} is not the digest its uri names ({digest})")
        return "blob", digest
    if scheme in ("http", "https"):
        return "url", uri
    if scheme in ("file", "") or len(scheme) == 1 or not scheme.isalnum():  # a path (C:\ too) or no URL at all
        raise InvalidInputError(f"{field}: file paths and file:// URLs are not accepted from a job "
                                "(the worker's own files); send the bytes inline ('data') or as a blob:// reference")
    raise InvalidInputError(f"{field}: unsupported URL scheme {scheme!r}; expected blob://, data: or an allowed http(s) URL")


def _at(where: str) -> str:
    """Where an asset stands, for messages about the asset as a whole (nothing for the input itself)."""
    return "" if where == "input" else f"{where}: "


def asset_from_json(value: dict[str, Any], where: str = "input") -> Asset:
    """Rebuild an asset from a job's JSON (an asset, or a whole TransformResult as a chain passes it).

    Binary media come inline, as a ``blob://`` reference that must be in the store, or from a URL the
    operator allows (fetched into the store here); anything else is an ``InvalidInputError`` naming
    ``where`` and the field. Media whose header declares more pixels or seconds than the caps allow
    are refused here (``mediainfo.check_media``), before any provider decodes them.
    """
    if "asset" in value and isinstance(value["asset"], dict):
        asset = asset_from_json(value["asset"], f"{where}.asset")
        prompt = (value.get("metadata") or {}).get("generation_prompt")
        if prompt is not None:
            asset.metadata.setdefault("generation_prompt", prompt)
        return asset
    kind = value.get("type")
    cls = ASSET_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidInputError(f"{_at(where)}input asset has unknown type {kind!r}; expected one of {sorted(ASSET_TYPES)}")
    fields = {k: v for k, v in value.items() if k in cls.model_fields and k not in ("uri", "sha256", "size")}
    try:
        if not issubclass(cls, BinaryAsset):
            if not isinstance(value.get("content"), str):
                raise InvalidInputError(f"{_at(where)}text input asset needs a string 'content'")
            return Text(**fields)
        source, detail = binary_source(value, where)
        if source == "bytes":
            data, mime = detail
            if mime and not fields.get("mime_type"):
                fields["mime_type"] = mime
            return _within_caps(cls(data=data, **fields), where)
        if source == "url":
            from .fetch import fetch_input  # the network client only where a URL is actually fetched

            uri, digest, size, mime = fetch_input(detail, f"{where} field 'uri'")
            if mime and not fields.get("mime_type"):
                fields["mime_type"] = mime
            return _within_caps(cls(uri=uri, sha256=digest, size=size, **fields), where)
        store = BlobStore()
        if not store.claim(detail):
            raise InvalidInputError(f"{where} field 'uri': {store.missing(value['uri'])}")
        return _within_caps(cls(uri=value["uri"], sha256=detail, size=store.path_for(detail).stat().st_size, **fields), where)
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = ".".join(str(p) for p in problem["loc"]) or "asset"
        raise InvalidInputError(f"{where} field {name!r}: {problem['msg']}") from None


def _within_caps(asset: BinaryAsset, where: str) -> BinaryAsset:
    """``asset`` once its header is within ``MEDIACONDUIT_MAX_MEDIA_PIXELS`` and ``_SECONDS`` (read, not decoded)."""
    check_media(asset, where)
    return asset


def check_job_input(value: Any, where: str = "input") -> None:
    """What ``job_input`` refuses without touching the store or the network (the batch reader's check)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_job_input(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        if isinstance(value.get("asset"), dict):
            check_job_input(value["asset"], f"{where}.asset")
        elif value.get("type") in ASSET_TYPES and value.get("type") != "text":
            binary_source(value, where)


def job_input(value: Any, where: str = "input") -> Any:
    """A job's JSON input as models take it: ``str``, an asset (from asset JSON or a TransformResult),
    or a list of them."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return asset_from_json(value, where)
    if isinstance(value, list) and value:
        return [job_input(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise InvalidInputError(
        f"invalid input of type {type(value).__name__}: expected a string, an asset, a TransformResult or a list of them"
    )


def map_input(value: Any, leaf: Callable[[Any], T]) -> T | list[Any]:
    """``leaf`` of each ``str`` or asset in a model's input, in the input's shape (a list gives a list):
    the one walk over a job's decoded input, for its record, its digests, its cache key and its price."""
    if isinstance(value, (list, tuple)):
        return [map_input(v, leaf) for v in value]
    return leaf(value)


def input_items(value: Any) -> list[Any]:
    """The ``str`` and asset items of a model's input, lists flattened."""
    if isinstance(value, (list, tuple)):
        return [item for v in value for item in input_items(v)]
    return [value]
