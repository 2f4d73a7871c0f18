"""Media assets: what models take and return. Text is inline; binary media may be a blob reference."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .blobs import BlobStore


class Asset(BaseModel):
    """Common part: ``metadata`` (holds ``generation_prompt``) and ``source`` (the asset it came from)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    type: ClassVar[str]
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: Any = None

    @property
    def generation_prompt(self) -> dict[str, Any] | None:
        return self.metadata.get("generation_prompt")

    def describe(self) -> dict[str, Any]:
        """JSON form kept in a generation prompt: raw content or blob identity, plus metadata."""
        raise NotImplementedError


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

    def describe(self) -> dict[str, Any]:
        return {"type": "text", "content": self.content, "language": self.language, "metadata": self.metadata}


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

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "uri": self.uri,
            "sha256": self.sha256,
            "size": self.size,
            "mime_type": self.mime_type,
            "metadata": self.metadata,
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
AssetInput = Union[str, Asset, list[Union[str, Asset]]]
AssetType = Literal["text", "image", "audio", "video"]


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
        raise ValueError(f"input asset has unknown type {kind!r}; expected one of {sorted(ASSET_TYPES)}")
    fields = {k: v for k, v in value.items() if k != "type" and k in cls.model_fields}
    if cls is Text:
        if not isinstance(value.get("content"), str):
            raise ValueError("text input asset needs a string 'content'")
        return Text(**fields)
    if not value.get("uri"):
        raise ValueError(f"{kind} input asset needs a blob 'uri'")
    return cls(**fields)
