"""TransformResult: the JSON every job returns, output asset plus how it was made."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .assets import Asset, BinaryAsset, Text


class AssetRef(BaseModel):
    """Text inline as ``content``; binary media as a blob reference."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "image", "audio", "video"]
    content: str | None = None
    language: str | None = None
    uri: str | None = None
    sha256: str | None = None
    size: int | None = None
    mime_type: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SourceInfo(BaseModel):
    url: str
    kind: str
    ref: str | None = None
    commit: str | None = None


class ResultMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    generation_prompt: dict[str, Any]
    provider: str
    provider_url: str
    model: str
    capability: str | None = None
    processing_time_ms: float
    source: SourceInfo
    task_id: str | None = None
    worker: str | None = None


class TransformResult(BaseModel):
    asset: AssetRef
    metadata: ResultMetadata

    @property
    def generation_prompt(self) -> dict[str, Any]:
        return self.metadata.generation_prompt


def asset_ref(asset: Asset) -> AssetRef:
    """The wire form of an output asset; binary data goes to the blob store first."""
    extra = {k: v for k, v in asset.metadata.items() if k != "generation_prompt"}
    if isinstance(asset, Text):
        return AssetRef(type="text", content=asset.content, language=asset.language, metadata=extra)
    assert isinstance(asset, BinaryAsset)
    asset.store()
    return AssetRef(
        type=asset.type,  # type: ignore[arg-type]
        uri=asset.uri,
        sha256=asset.sha256,
        size=asset.size,
        mime_type=asset.mime_type,
        metadata=extra,
    )
