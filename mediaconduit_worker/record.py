"""The record of how an output was made: generation prompts and result records.

A job's result (``TransformResult``) carries its output asset and a *generation prompt*: the input
(with an input asset's own prompt, so a chain is a full history), the options, the model, the
provider and the source commit. What goes into a prompt is redacted first (``redaction.py``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from .assets import Asset, BinaryAsset, Text, map_input
from .payload import is_plain_json
from .redaction import redact


# -- generation prompts ---------------------------------------------------------------------------
def describe_input(value: Any) -> Any:
    """The raw input, assets included with their own generation prompts, as JSON. An asset's metadata
    came with the job (a submitter may put anything there) and is redacted like options."""
    return map_input(value, _described)


def _described(value: Any) -> Any:
    if isinstance(value, Asset):
        described = value.to_json()
        described["metadata"] = redact(described["metadata"])
        return described
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
RECORD_VERSION = "2"
"""Bumped when a field changes meaning; ``docs/record.schema.json`` is generated from ``TransformResult``."""
PACKAGE = "mediaconduit-worker"


@functools.cache
def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def content_digest(value: Any) -> Any:
    """SHA-256 (hex) of what a step read or wrote: text as UTF-8, media as their bytes; a list gives a list."""
    return map_input(value, _digest)


def _digest(value: Any) -> str | None:
    if isinstance(value, str):
        return hashlib.sha256(value.encode()).hexdigest()
    if isinstance(value, Text):
        return hashlib.sha256(value.content.encode()).hexdigest()
    if isinstance(value, BinaryAsset):
        return value.sha256 or hashlib.sha256(value.data).hexdigest()
    if isinstance(value, Asset):
        raise TypeError(f"no digest for {type(value).__name__}")
    return None


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
    """Where the provider's code came from, resolved: what ``replay`` fetches again."""

    kind: Literal["git", "path", "pypi"]
    ref: str | None = None
    """The branch or tag the job named (git)."""
    commit: str | None = None
    """The commit the provider ran at (git, or a folder that is a work tree)."""
    subdirectory: str | None = None
    """The provider's folder inside its git repository (``#subdirectory=`` or a GitHub ``/tree/`` URL)."""
    version: str | None = None
    """``name==version`` of a PyPI provider."""


class ServiceRecord(BaseModel):
    """A Docker provider's service as it ran."""

    model_config = ConfigDict(extra="allow")
    url: str | None = None
    id: str | None = None
    commit: str | None = None
    image: str | None = None
    image_id: str | None = None


class GenerationPrompt(BaseModel):
    """How one output was made. The provider writes the first fields (``create_generation_prompt``; it
    may add its own), the worker completes the rest from what it knows, overriding the provider's."""

    model_config = ConfigDict(extra="allow")
    input: Any = None
    """The raw input; an input asset keeps its own ``metadata.generation_prompt``: a chain nests one per step."""
    options: dict[str, Any] | None = None
    model_id: str | None = None
    model_name: str | None = None
    provider: str | None = None
    """The provider's manifest id."""
    transformation_type: str | None = None
    processing_time: float | None = None
    """The model's own time, in milliseconds."""
    timestamp: str | None = None
    route: str | None = None
    """A ``route:NAME`` job's route; ``provider`` and ``model_id`` are then the candidate that served."""
    provider_prompt: Any = None
    """A provider's prompt that was not a JSON object, kept as it was."""
    record_version: Literal["2"]
    package_version: str
    input_digest: str | list[Any] | None
    output_digest: str | None
    provider_url: str
    """The URL the job named (the serving candidate's, for a route), credentials removed."""
    source: SourceInfo
    capability: str | None
    """The queue the job ran on."""
    service: ServiceRecord | None = None


class Signer(BaseModel):
    """Who signed a manifest, as its certificate says (never the key)."""

    subject: str
    """The signing certificate's common name."""
    issuer: str
    origin: Literal["operator", "development"]
    """``development``: the pair ``mediaconduit credentials init`` made, trusted by no one else."""
    alg: str


class Credentials(BaseModel):
    """The Content Credentials (C2PA manifest) embedded in a media output, or why there are none."""

    signed: bool
    reason: str | None = None
    """Unsigned: why (a format C2PA has no embedding for, no signing key, the library's error)."""
    manifest: str | None = None
    """The active manifest's label (``urn:c2pa:…``), as ``c2pa.Reader`` reports it."""
    format: str | None = None
    action: str | None = None
    """``c2pa.created``, ``c2pa.edited``, ``c2pa.transcoded`` or ``c2pa.converted``."""
    digital_source_type: str | None = None
    """The IPTC term declared (null when the provider declares ``none``)."""
    signer: Signer | None = None
    unsigned_sha256: str | None = None
    """SHA-256 of the bytes the provider made (the prompt's ``output_digest``); the asset is the signed file."""
    unsigned_size: int | None = None
    ingredients: int | None = None
    """Input media added as ingredients, each with its own manifest."""


class RecordSignature(BaseModel):
    """A detached signature over the record's canonical JSON without this field (``docs/credentials.md``)."""

    subject: str
    """The signing certificate's common name."""
    issuer: str
    origin: Literal["operator", "development"]
    alg: str
    """``es256`` (DER-encoded ECDSA P-256 over SHA-256) or ``ed25519``."""
    certificate: str
    """The signing certificate, DER in base64."""
    value: str
    """The signature, base64."""


class ResultMetadata(BaseModel):
    """What the worker adds beside the asset: the generation prompt, and what only this delivery knows."""

    model_config = ConfigDict(extra="allow")
    generation_prompt: GenerationPrompt
    processing_time_ms: float
    """Time in the task, load and service start included."""
    task_id: str | None = None
    worker: str | None = None
    candidate: dict[str, Any] | None = None
    """A routed job's serving candidate: ``index`` (1-based), ``provider``, ``model``."""
    attempts: list[dict[str, Any]] | None = None
    """A routed job's tries in order: ``candidate``, ``provider``, ``model``, ``error`` (class), ``status``
    (HTTP), ``duration_ms``, and ``skipped`` (cooldown, concurrency, rpm, tpm, budget) or ``message``."""
    cache: dict[str, Any] | None = None
    """An opt-in cached job: ``hit``, ``key``."""
    warnings: list[str] | None = None
    """Options the model's manifest ``parameters`` do not declare, each named (passed on as given)."""
    credentials: Credentials | None = None
    """A media output's Content Credentials (``docs/credentials.md``): what was signed and by whom, or why not."""
    signature: RecordSignature | None = None
    """The record's detached signature, when the worker has a signing key."""


class TransformResult(BaseModel):
    """A job's result: the output asset and how it was made; also a valid input of the next job."""

    asset: AssetRef
    metadata: ResultMetadata

    @property
    def generation_prompt(self) -> GenerationPrompt:
        return self.metadata.generation_prompt


_METADATA_FIELDS = tuple(ResultMetadata.model_fields)
_SOURCE_FIELDS = tuple(SourceInfo.model_fields)


class ResultBuilder:
    """The one way a result record is made: the steps of a job add to it, then ``build`` gives the JSON
    that ``TransformResult.model_validate(built).model_dump(mode="json", exclude_unset=True)`` gives
    (validating the worker's own values again cost more than the rest of the record; a test holds the two
    equal). Metadata fields left unset are left out; the prompt keeps its nulls."""

    __slots__ = ("metadata", "prompt")

    def __init__(self) -> None:
        self.prompt: dict[str, Any] | None = None
        self.metadata: dict[str, Any] = {}

    def complete_prompt(self, prompt: Any, *, input: Any, output: Asset, provider_url: str, source: dict[str, Any],
                        capability: str | None, service: dict[str, Any] | None = None,
                        route: str | None = None) -> dict[str, Any]:
        """``prompt`` (the provider's) with the fields the worker sets; one that is not a mapping is kept under
        ``provider_prompt``. ``provider_url`` must already be safe to show."""
        record = dict(prompt) if isinstance(prompt, dict) else {"provider_prompt": prompt}
        if route is not None:
            record["route"] = route
        record.update(
            record_version=RECORD_VERSION,
            package_version=package_version(),
            input_digest=content_digest(input),
            output_digest=content_digest(output),
            provider_url=provider_url,
            source={k: source[k] for k in _SOURCE_FIELDS if source.get(k) is not None},
            capability=capability,
        )
        if service:
            own = record.get("service")
            record["service"] = redact({**(own if isinstance(own, dict) else {}), **service})
        self.prompt = record
        return record

    def note(self, **fields: Any) -> None:
        """Set ``ResultMetadata`` fields of this delivery (``candidate``, ``attempts``, ``cache`` …)."""
        unknown = set(fields) - set(_METADATA_FIELDS)
        if unknown:
            raise TypeError(f"not a result metadata field: {sorted(unknown)}")
        self.metadata.update(fields)

    def build(self, asset: Asset, *, processing_time_ms: float, task_id: str | None,
              worker: str | None) -> dict[str, Any]:
        """The record's JSON; binary output goes to the blob store first."""
        if self.prompt is None:
            raise RuntimeError("a result needs its generation prompt first (complete_prompt)")
        self.note(processing_time_ms=processing_time_ms, task_id=task_id, worker=worker)
        ref = {k: v for k, v in asset.to_json(with_prompt=False).items() if v is not None}
        meta: dict[str, Any] = {"generation_prompt": self.prompt}
        meta.update((k, v) for k, v in self.metadata.items() if v is not None)
        record = {"asset": ref, "metadata": meta}
        # Almost always plain JSON already: ``to_jsonable_python`` would then only copy it, at twice the cost
        # of the look (a tuple would come back a list, so one is not plain here).
        return record if is_plain_json(record, tuples=False) else to_jsonable_python(record)

    @staticmethod
    def again(record: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """A stored record (format 1 or 2) served again, as format 2, with this delivery's metadata fields."""
        again = upgrade_record(record)
        unknown = set(fields) - set(_METADATA_FIELDS)
        if unknown:
            raise TypeError(f"not a result metadata field: {sorted(unknown)}")
        again["metadata"].update(fields)
        return again


#: Format 1 kept in ``metadata`` what the prompt holds, and the source in three prompt fields.
_V1_ONLY_METADATA = ("route", "provider", "provider_url", "model", "capability", "source")
_V1_PROMPT_SOURCE = {"provider_commit": "commit", "provider_version": "version", "source_kind": "kind"}


def prompt_source(prompt: dict[str, Any]) -> dict[str, Any]:
    """A prompt's source (``kind``, ``commit``, ``version`` …), of either record format."""
    source = prompt.get("source")
    if isinstance(source, dict):
        return source
    return {new: prompt.get(old) for old, new in _V1_PROMPT_SOURCE.items() if prompt.get(old) is not None}


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A result of record format 1 as format 2 (a copy); a format 2 record is copied as it is. The prompts
    of earlier steps inside the input are history and keep the format they were written in."""
    metadata = dict(record["metadata"])
    prompt = dict(metadata["generation_prompt"])
    if prompt.get("record_version") == RECORD_VERSION:
        return {**record, "metadata": metadata}
    source = {k: v for k, v in (metadata.get("source") or {}).items() if k != "url" and v is not None}
    source.update(prompt_source(prompt))
    for old in _V1_PROMPT_SOURCE:
        prompt.pop(old, None)
    prompt.update(record_version=RECORD_VERSION, source=source)
    prompt.setdefault("provider_url", metadata.get("provider_url"))
    prompt.setdefault("capability", metadata.get("capability"))
    if metadata.get("route") is not None:
        prompt.setdefault("route", metadata["route"])
    for key in _V1_ONLY_METADATA:
        metadata.pop(key, None)
    metadata["generation_prompt"] = prompt
    return {"asset": record["asset"], "metadata": metadata}


SCHEMA_ID = "https://github.com/MediaConduit/mediaconduit-worker/docs/record.schema.json"


def record_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a ``TransformResult``, as ``docs/record.schema.json`` publishes it."""
    schema = TransformResult.model_json_schema(mode="serialization")
    schema.update(title=f"MediaConduit TransformResult, record format {RECORD_VERSION}",
                  description="What every transform job returns: the output asset and the record of how it was "
                              "made (docs/record.md).")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}

