"""Generation prompts: the record of how an output was made, nested across chains."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from .assets import Asset

REDACTED = "[REDACTED]"
# "token" but not "maxTokens"/"max_tokens" (counts, not credentials) or "tokenizer".
_SECRET_KEY = re.compile(r"(api[_-]?key|apikey|token(?!s|iz)|secret|password|passwd|authorization|credential|private[_-]?key)", re.I)
_SECRET_VALUE = re.compile(r"^(sk-|sk_|xai-|hf_|ghp_|gho_|Bearer\s)[A-Za-z0-9_\-.]{8,}")


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    """Copy of ``value`` with secret-looking keys and token-shaped strings replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str) and _SECRET_VALUE.match(value):
        return REDACTED
    return value


def describe_input(value: Any) -> Any:
    """The raw input, assets included with their own generation prompts, as JSON."""
    if isinstance(value, Asset):
        return value.describe()
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
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }
    prompt.update(redact(extra))
    return prompt
