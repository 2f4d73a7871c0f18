"""The record of how an output was made, and what keeps secrets out of it.

A job's result (``TransformResult``) carries its output asset and a *generation prompt*: the input
(with an input asset's own prompt, so a chain is a full history), the options, the model, the
provider and the source commit. Everything stored or shown is redacted first, by two nets: a
secret is caught by its key name (``api_key``, ``openai_key``, ``password``, ``cookie``, ``dsn`` ...)
or by its shape (``sk-…``, ``AKIA…``, a JWT, ``Bearer …``, ``user:pass@`` in a URL, ``?api_key=…``).
"""

from __future__ import annotations

import base64
import copy
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from .assets import Asset
from .errors import ProviderExecutionError
from .payload import is_plain_json

REDACTED = "[REDACTED]"


#: Whole words of a key name that mark its value as a secret (``maxTokens`` is a count: "tokens").
_SECRET_WORDS = frozenset({
    "token", "secret", "secrets", "password", "passwd", "pass", "pwd", "passphrase", "auth", "authorization",
    "credential", "credentials", "cookie", "cookies", "session", "dsn", "apikey", "bearer", "signature",
})
#: A last word that makes the key describe a secret rather than hold one (``token_count``, ``auth_type``).
_DESCRIBING_WORDS = frozenset({"count", "limit", "length", "size", "type", "mode", "method", "version", "enabled"})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

#: Token shapes worth redacting wherever they stand in a string. Prefixed keys and ``bearer``/``token``
#: values need a digit and ``Basic`` values must decode to ``user:password``, so names and prose
#: ("xai-provider", "a basic principle") are kept.
_SECRET_SHAPES = re.compile(
    r"""
    \b(?:sk|rk)[-_](?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{8,}    # OpenAI, Anthropic, Stripe style
    | \b(?:xai|hf|ghp|gho|ghu|ghs|ghr|glpat|npm|pypi)[-_](?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{8,}
    | \bgithub_pat_[A-Za-z0-9_]{8,}
    | \bxox[abeoprs]-[A-Za-z0-9\-]{8,}                     # Slack
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                        # AWS access key id
    | \bAIza[0-9A-Za-z_\-]{30,}                            # Google API key
    | \beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*   # JWT
    | (?i:\b(?:bearer|token)\s+)(?=[A-Za-z0-9+/=_\-.~]*\d)[A-Za-z0-9+/=_\-.~]{8,}   # Authorization values
    | (?i:\bbasic\s+)(?P<basic>[A-Za-z0-9+/]{6,}={0,2})
    """,
    re.VERBOSE,
)
#: ``scheme://user:password@`` (also ``redis://:password@``) and long bare user tokens
#: (``https://ghp_…@github.com``); group ``secret`` is the password or the token.
_USERINFO = re.compile(r"(?<=://)(?:[^/\s@:]*:(?P<password>[^/\s@]+)|(?P<token>[^/\s@:]{20,}))@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|auth|signature|sig|password|secret|client[_-]?secret)=)"
    r"(?P<value>[^&#\s]+)"
)


#: Strings up to this length have their redaction and secret scan remembered (``_MEMO`` of them): a
#: worker sees the same provider URLs, model ids and option values job after job, and the scan is a
#: few regular expressions over each. Longer strings are scanned every time, so a job cannot fill the
#: memo with large strings.
_MEMO_CHARS = 512
_MEMO = 2048
_R = TypeVar("_R")


def _remember_short(fn: Callable[[str], _R]) -> Callable[[str], _R]:
    """``fn`` with its answers for strings of up to ``_MEMO_CHARS`` characters remembered."""
    remembered = functools.lru_cache(maxsize=_MEMO)(fn)

    @functools.wraps(fn)
    def call(text: str) -> _R:
        return remembered(text) if len(text) <= _MEMO_CHARS else fn(text)

    return call


def key_words(key: str) -> list[str]:
    """``openaiApiKey`` → ``["openai", "api", "key"]``; separators and case changes split words."""
    return [w.lower() for w in _WORD.findall(key)]


@_remember_short
def is_secret_key(key: str) -> bool:
    """Whether a key name says its value is a credential (``api_key``, ``openai_key``, ``pwd``, ``dsn`` …)
    and not a property of one (``max_tokens``, ``token_count``, ``auth_type``)."""
    words = key_words(key)
    if not words:
        return False
    if len(words) > 1 and words[-1] in _DESCRIBING_WORDS:
        return False
    joined = "".join(words)
    return (
        words[-1] == "key"
        or bool(_SECRET_WORDS.intersection(words))
        or "apikey" in joined
        or "privatekey" in joined
        or "connectionstring" in joined
    )



def _is_basic_credentials(value: str) -> bool:
    """Whether ``value`` is base64 of ``user:password`` (what follows ``Basic`` in a header)."""
    try:
        return b":" in base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except ValueError:
        return False


def _shape_matches(text: str) -> Iterator[re.Match[str]]:
    for m in _SECRET_SHAPES.finditer(text):
        if m.group("basic") is None or _is_basic_credentials(m.group("basic")):
            yield m


@_remember_short
def redact_text(text: str) -> str:
    """``text`` with token-shaped values, URL userinfo and secret query parameters replaced."""
    if not text:
        return text
    text = _SECRET_SHAPES.sub(
        lambda m: REDACTED if m.group("basic") is None or _is_basic_credentials(m.group("basic")) else m.group(0), text
    )
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


@_remember_short
def _secrets_in_text(text: str) -> tuple[str, ...]:
    found = [m.group(0) for m in _shape_matches(text)]
    found += [m.group("password") or m.group("token") for m in _USERINFO.finditer(text)]
    found += [m.group("value") for m in _QUERY_SECRET.finditer(text)]
    return tuple(found)


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
            found.extend(s for s in _secrets_in_text(v) if len(s) >= 4)
        elif secret and isinstance(v, (int, float)) and not isinstance(v, bool) and len(str(v)) >= 4:
            found.append(str(v))

    walk(value, False)
    return found


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` (longest first) and every secret shape replaced."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return redact_text(text)


def _scrub_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, list):
        return [_scrub_value(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub_value(v, secrets) for v in value)
    if isinstance(value, dict):
        return {_scrub_value(k, secrets): _scrub_value(v, secrets) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text, scrubbed = str(value), scrub(str(value), secrets)
    return scrubbed if scrubbed != text else value


def _quotes_secret(exc: BaseException, secrets: list[str]) -> bool:
    texts = [str(exc), repr(exc.args), *(str(v) for v in vars(exc).values())]
    return any(scrub(t, secrets) != t for t in texts)


def scrub_exception(exc: BaseException, secrets: Iterable[str] = ()) -> BaseException:
    """``exc`` itself when neither it nor the exceptions chained to it quote a secret; else a copy of
    the chain with ``secrets`` and secret shapes scrubbed from every message, argument and string
    attribute (a Celery result stores ``args``, a log prints the chain). The copies keep the original
    tracebacks, whose frames show code, not values."""
    secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
    chain: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in chain:
        chain.append(node)
        node = node.__cause__ or (None if node.__suppress_context__ else node.__context__)
    if not any(_quotes_secret(e, secrets) for e in chain):
        return exc
    clean: BaseException | None = None
    for original in reversed(chain):  # innermost first, so each copy can point at its scrubbed cause
        duplicate = _scrubbed_copy(original, secrets)
        duplicate.__cause__, duplicate.__context__ = clean, None
        duplicate.__suppress_context__ = True
        clean = duplicate.with_traceback(original.__traceback__)
    assert clean is not None
    return clean


def _scrubbed_copy(exc: BaseException, secrets: list[str]) -> BaseException:
    """Same type, scrubbed ``args`` and attributes; a ``ProviderExecutionError`` naming the type when the
    type cannot be copied or still shows a secret through its own ``__str__``."""
    try:
        clone = copy.copy(exc)
        clone.args = tuple(_scrub_value(a, secrets) for a in exc.args)
        for name, value in vars(exc).items():
            setattr(clone, name, _scrub_value(value, secrets))
        if not _quotes_secret(clone, secrets):
            return clone
    except Exception:  # an exception type that cannot be copied this way: fall through to a plain one
        pass
    return ProviderExecutionError(scrub(f"{type(exc).__name__}: {exc}", secrets))


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

