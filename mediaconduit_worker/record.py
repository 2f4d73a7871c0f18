"""The record of how an output was made: generation prompts and result records.

A job's result (``TransformResult``) carries its output asset and a *generation prompt*: the input
(with an input asset's own prompt, so a chain is a full history), the options, the model, the
provider and the source commit. What goes into a prompt is redacted first (``redaction.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from .assets import Asset
from .payload import is_plain_json
from .redaction import redact


# -- generation prompts ---------------------------------------------------------------------------
def describe_input(value: Any) -> Any:
    """The raw input, assets included with their own generation prompts, as JSON. An asset's metadata
    came with the job (a submitter may put anything there) and is redacted like options."""
    if isinstance(value, Asset):
        described = value.to_json()
        described["metadata"] = redact(described["metadata"])
        return described
    if isinstance(value, (list, tuple)):
        return [describe_input(v) for v in value]
    return value


def create_generation_prompt(
    *,
    input: Any,
    options: dict[str, Any] | None = None,
    model_id: str,
    model_name: str | None = None,
    provider: str,
    transformation_type: str,
    processing_time: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build the prompt record; ``processing_time`` is in milliseconds."""
    prompt: dict[str, Any] = {
        "input": describe_input(input),
        "options": redact(dict(options or {})),
        "model_id": model_id,
        "model_name": model_name or model_id,
        "provider": provider,
        "transformation_type": str(transformation_type),
        "processing_time": processing_time,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    prompt.update(redact(extra))
    return prompt


# -- results ----------------------------------------------------------------------------------------
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
    subdirectory: str | None = None
    """The provider's folder inside its git repository (``#subdirectory=`` or a GitHub ``/tree/`` URL)."""
    version: str | None = None
    """``name==version`` of a PyPI provider."""


class ResultMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    route: str | None = None
    """The route a ``route:NAME`` job named; first, with ``candidate``, so short views (Flower) show them."""
    candidate: dict[str, Any] | None = None
    """The route's candidate that served: ``index`` (1-based), ``provider``, ``model``."""
    generation_prompt: dict[str, Any]
    provider: str
    provider_url: str
    model: str
    capability: str | None = None
    processing_time_ms: float
    source: SourceInfo
    task_id: str | None = None
    worker: str | None = None
    attempts: list[dict[str, Any]] | None = None
    """A routed job's tries in order: ``candidate``, ``provider``, ``model``, ``error`` (class), ``status``
    (HTTP), ``duration_ms``, and ``skipped`` (cooldown, concurrency, rpm, tpm, budget) or ``message``."""


class TransformResult(BaseModel):
    asset: AssetRef
    metadata: ResultMetadata

    @property
    def generation_prompt(self) -> dict[str, Any]:
        return self.metadata.generation_prompt


_METADATA_FIELDS = tuple(ResultMetadata.model_fields)


def result_record(asset: Asset, metadata: dict[str, Any], *, metadata_first: bool = False) -> dict[str, Any]:
    """The JSON of the ``TransformResult`` for an output asset (binary data goes to the blob store first)
    and ``ResultMetadata``'s fields: what its ``model_dump(mode="json", exclude_none=True)`` gives, built
    straight from the worker's own values (validating them again cost more than the rest of the record;
    a test holds the two equal). ``metadata_first`` puts ``metadata`` before ``asset``: a routed result
    leads with the route and the candidate that served, so views that cut it short still show them."""
    ref = {k: v for k, v in asset.to_json(with_prompt=False).items() if v is not None}
    meta = {k: metadata[k] for k in _METADATA_FIELDS if metadata.get(k) is not None}
    meta.update((k, v) for k, v in metadata.items() if v is not None and k not in meta)
    meta["source"] = {k: v for k, v in meta["source"].items() if v is not None}
    record = {"metadata": meta, "asset": ref} if metadata_first else {"asset": ref, "metadata": meta}
    # Almost always plain JSON already: ``to_jsonable_python`` would then only copy it, at twice the cost
    # of the look (a tuple would come back a list, so one is not plain here).
    return record if is_plain_json(record, tuples=False) else to_jsonable_python(record)

