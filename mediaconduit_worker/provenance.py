"""The replayable part of a generation prompt: digests, pinned sources, versions (docs/record.md).

The worker completes every prompt with these fields, whatever the provider put in it, so a result
alone says exactly what to run again (``mediaconduit replay``) and what to compare the output with.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from functools import lru_cache
from typing import Any

from .assets import Asset, BinaryAsset, Text
from .redaction import redact, redact_url

#: Bumped when a field changes meaning; ``docs/record.schema.json`` describes this version.
RECORD_VERSION = "1"
PACKAGE = "mediaconduit-worker"


@lru_cache
def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def content_digest(value: Any) -> Any:
    """SHA-256 (hex) of what a step read or wrote: text as UTF-8, media as their bytes; a list gives a list."""
    if isinstance(value, str):
        return hashlib.sha256(value.encode()).hexdigest()
    if isinstance(value, Text):
        return hashlib.sha256(value.content.encode()).hexdigest()
    if isinstance(value, BinaryAsset):
        return value.sha256 or hashlib.sha256(value.data).hexdigest()
    if isinstance(value, (list, tuple)):
        return [content_digest(v) for v in value]
    if isinstance(value, Asset):
        raise TypeError(f"no digest for {type(value).__name__}")
    return None


def complete_record(prompt: Any, *, input: Any, output: Asset, provider_url: str,
                    source: dict[str, Any], capability: str | None, service: dict[str, Any] | None) -> dict[str, Any]:
    """``prompt`` with the record fields set by the worker (they override a provider's own); a prompt that is
    not a mapping is kept under ``provider_prompt``."""
    record = dict(prompt) if isinstance(prompt, dict) else {"provider_prompt": prompt}
    record.update(
        record_version=RECORD_VERSION,
        package_version=package_version(),
        input_digest=content_digest(input),
        output_digest=content_digest(output),
        provider_url=redact_url(provider_url),
        provider_commit=source.get("commit"),
        provider_version=source.get("version"),
        source_kind=source.get("kind"),
        capability=capability,
    )
    if service:
        own = record.get("service")
        record["service"] = redact({**(own if isinstance(own, dict) else {}), **service})
    return record
