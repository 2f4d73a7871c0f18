"""The record of how an output was made, and what keeps secrets out of it.

A job's result (``TransformResult``) carries its output asset and a *generation prompt*: the input
(with an input asset's own prompt, so a chain is a full history), the options, the model, the
provider and the source commit. Everything stored or shown is redacted first, by two nets: a
secret is caught by its key name (``api_key``, ``openai_key``, ``password``, ``cookie``, ``dsn`` ...)
or by its shape (``sk-…``, ``AKIA…``, a JWT, ``Bearer …``, ``user:pass@`` in a URL, ``?api_key=…``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .assets import Asset

REDACTED = "[REDACTED]"


#: Whole words of a key name that mark its value as a secret (``maxTokens`` is a count: "tokens").
_SECRET_WORDS = frozenset({
    "token", "secret", "secrets", "password", "passwd", "pass", "pwd", "passphrase", "auth", "authorization",
    "credential", "credentials", "cookie", "cookies", "session", "dsn", "apikey", "bearer", "signature",
})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

#: Token shapes worth redacting wherever they stand in a string.
_SECRET_SHAPES = re.compile(
    r"""
    \b(?:sk|rk)[-_][A-Za-z0-9_\-]{8,}                      # OpenAI, Anthropic, Stripe style
    | \b(?:xai|hf|ghp|gho|ghu|ghs|ghr|glpat|npm|pypi)[-_][A-Za-z0-9_\-]{8,}
    | \bgithub_pat_[A-Za-z0-9_]{8,}
    | \bxox[abeoprs]-[A-Za-z0-9\-]{8,}                     # Slack
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                        # AWS access key id
    | \bAIza[0-9A-Za-z_\-]{30,}                            # Google API key
    | \beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*   # JWT
    | (?i:\b(?:bearer|basic|token)\s+)[A-Za-z0-9+/=_\-.~]{8,}          # Authorization header values
    """,
    re.VERBOSE,
)
#: ``scheme://user:password@``, ``redis://:password@`` (and long bare user tokens such as ``https://ghp_…@github.com``).
_USERINFO = re.compile(r"(?<=://)(?:[^/\s@:]*:[^/\s@]*|[^/\s@:]{20,})@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|auth|signature|sig|password|secret|client[_-]?secret)=)[^&#\s]+"
)


def key_words(key: str) -> list[str]:
    """``openaiApiKey`` → ``["openai", "api", "key"]``; separators and case changes split words."""
    return [w.lower() for w in _WORD.findall(key)]


def is_secret_key(key: str) -> bool:
    """Whether a key name says its value is a credential."""
    words = key_words(key)
    if not words:
        return False
    joined = "".join(words)
    return (
        words[-1] == "key"
        or bool(_SECRET_WORDS.intersection(words))
        or "apikey" in joined
        or "privatekey" in joined
        or "connectionstring" in joined
    )


def redact_text(text: str) -> str:
    """``text`` with token-shaped values, URL userinfo and secret query parameters replaced."""
    if not text:
        return text
    text = _SECRET_SHAPES.sub(REDACTED, text)
    text = _USERINFO.sub(REDACTED + "@", text)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)


def strip_userinfo(url: str) -> str:
    """A URL as it may be shown: credentials in its userinfo or query replaced."""
    return redact_text(url)


def redact(value: Any) -> Any:
    """Copy of ``value`` with secret-named keys and secret-shaped strings replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else redact(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def secret_values(value: Any) -> list[str]:
    """The strings ``redact`` would hide in ``value``: scrub them from messages that quote them."""
    found: list[str] = []

    def walk(v: Any, secret: bool) -> None:
        if isinstance(v, dict):
            for k, item in v.items():
                walk(item, secret or (isinstance(k, str) and is_secret_key(k)))
        elif isinstance(v, (list, tuple)):
            for item in v:
                walk(item, secret)
        elif isinstance(v, str):
            if secret and len(v) >= 4:
                found.append(v)
            found.extend(m.group(0) for m in _SECRET_SHAPES.finditer(v))
        elif secret and isinstance(v, (int, float)) and not isinstance(v, bool) and len(str(v)) >= 4:
            found.append(str(v))

    walk(value, False)
    return found


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` (longest first) and every secret shape replaced."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return redact_text(text)


# -- generation prompts ---------------------------------------------------------------------------
def describe_input(value: Any) -> Any:
    """The raw input, assets included with their own generation prompts, as JSON."""
    if isinstance(value, Asset):
        return value.to_json()
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

    @classmethod
    def of(cls, asset: Asset, metadata: ResultMetadata) -> TransformResult:
        """The result for an output asset (binary data goes to the blob store first)."""
        return cls(asset=AssetRef.model_validate(asset.to_json(with_prompt=False)), metadata=metadata)
