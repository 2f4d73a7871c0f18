"""Media assets: what models take and return. Text is inline; binary media may be a blob reference."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import IO, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .blobs import BlobStore
from .errors import InvalidInputError


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
        """Put the bytes in the blob store (once) and remember the reference."""
        if self.uri is None or not self.uri.startswith("blob://"):
            self.uri, self.sha256 = (store or BlobStore()).put(self.data)
            self.size = len(self.data)
        return self.uri

    # File-backed use (media.py): media of any size never has to fit in memory.
    @classmethod
    def from_path(cls, path: str | Path, mime_type: str | None = None, **kwargs: Any) -> Self:
        """A local file copied into the shared blob store in chunks; the asset holds only its reference.
        For trusted producer and provider code: job JSON never carries paths."""
        from .media import asset_from_path

        return asset_from_path(cls, path, mime_type, **kwargs)

    def path(self) -> Path:
        """The asset's file in the blob store (stored first when it holds bytes)."""
        from .media import blob_path

        return blob_path(self.store())

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


def asset_from_json(value: dict[str, Any]) -> Asset:
    """Rebuild an asset from its JSON form or from a whole TransformResult (as a chain passes it)."""
    if "asset" in value and isinstance(value["asset"], dict):
        asset = asset_from_json(value["asset"])
        prompt = (value.get("metadata") or {}).get("generation_prompt")
        if prompt is not None:
            asset.metadata.setdefault("generation_prompt", prompt)
        return asset
    kind = value.get("type")
    cls = ASSET_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidInputError(f"input asset has unknown type {kind!r}; expected one of {sorted(ASSET_TYPES)}")
    fields = {k: v for k, v in value.items() if k != "type" and k in cls.model_fields}
    if cls is Text:
        if not isinstance(value.get("content"), str):
            raise InvalidInputError("text input asset needs a string 'content'")
        return Text(**fields)
    if not value.get("uri"):
        raise InvalidInputError(f"{kind} input asset needs a blob 'uri'")
    return cls(**fields)


def job_input(value: Any) -> Any:
    """A job's JSON input as models take it: ``str``, an asset (from asset JSON or a TransformResult),
    or a list of them."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return asset_from_json(value)
    if isinstance(value, list) and value:
        return [job_input(v) for v in value]
    raise InvalidInputError(
        f"invalid input of type {type(value).__name__}: expected a string, an asset, a TransformResult or a list of them"
    )
