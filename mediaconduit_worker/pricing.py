"""What a call costs: an estimate before it (from the model's pricing and the input's size) and the
figure after it (from the usage the API reported), for tokens, images, seconds and characters alike.

Why here, in the SDK: budgets refuse a job *before* any call, so the estimate must come from what is
known up front; and media (images, speech) must not be counted as free because they report no tokens.

A pricing is a dict of USD amounts, as ``ProviderModel.pricing`` or a route candidate's ``pricing``
carries it. Every key is optional:

========================  =====================================================
``prompt``                per input token
``completion``            per output token
``request``               per call (``per_request`` is accepted too)
``per_image``             per generated image
``per_second``            per second: of audio or video generated or transcribed, or of compute, as
                          the provider reports it (``usage.seconds``, or its own ``cost.total``)
``per_character``         per input character (speech synthesis)
========================  =====================================================
"""

from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass
from typing import Any

from .assets import Asset, Audio, Text, input_items

CHARS_PER_TOKEN = 4
"""Input tokens are estimated as characters / 4 (the usual rule of thumb for English text)."""
DEFAULT_OUTPUT_TOKENS = 256
"""Output tokens assumed when a job sets no ``maxOutputTokens``."""
SPEECH_CHARS_PER_SECOND = 15
"""Characters spoken per second, to estimate the length of synthesised speech."""
_MAX_TOKENS_KEYS = ("maxOutputTokens", "max_output_tokens", "maxTokens", "max_tokens")
_SYSTEM_KEYS = ("systemPrompt", "system_prompt", "system")


def _number(pricing: dict[str, Any], *keys: str) -> float:
    for key in keys:
        value = pricing.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                continue
    return 0.0


def is_priced(pricing: dict[str, Any] | None) -> bool:
    """Whether ``pricing`` says anything about money (all zeros is priced: a free model)."""
    if not pricing:
        return False
    keys = ("prompt", "completion", "request", "per_request", "per_image", "per_second", "per_character")
    return any(pricing.get(k) not in (None, "") for k in keys)


def _texts(value: Any) -> list[str]:
    return [v if isinstance(v, str) else v.content for v in input_items(value) if isinstance(v, (str, Text))]


def _audios(value: Any) -> list[Audio]:
    return [v for v in input_items(value) if isinstance(v, Audio)]


def audio_seconds(asset: Asset) -> float | None:
    """Duration of a WAV asset (read from its header); None for other formats."""
    if not isinstance(asset, Audio) or "wav" not in asset.mime_type:
        return None
    try:
        with wave.open(io.BytesIO(asset.data)) as w:
            return w.getnframes() / float(w.getframerate() or 1)
    except (wave.Error, EOFError, OSError):
        return None


def _option(options: dict[str, Any] | None, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if (options or {}).get(key) is not None:
            return (options or {})[key]
    return None


@dataclass(frozen=True)
class Size:
    """How big a job is, before the call: what the estimate and the ``tpm`` limit count."""

    characters: int
    input_tokens: int
    output_tokens: int
    images: int
    seconds: float
    """Of the input's audio (WAV)."""
    duration: float | None = None
    """Of the output, when the job asks for one (option ``duration``)."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def job_size(input: Any, options: dict[str, Any] | None) -> Size:
    """The input's characters and estimated tokens, the output tokens the job allows, images asked for."""
    texts = _texts(input)
    system = _option(options, _SYSTEM_KEYS)
    characters = sum(len(t) for t in texts)
    prompt_chars = characters + (len(system) if isinstance(system, str) else 0)
    max_tokens = _option(options, _MAX_TOKENS_KEYS)
    output = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0 \
        else DEFAULT_OUTPUT_TOKENS
    n = (options or {}).get("n")
    images = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    seconds = sum(s for a in _audios(input) if (s := audio_seconds(a)) is not None)
    duration = (options or {}).get("duration")
    duration = float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None
    return Size(characters, math.ceil(prompt_chars / CHARS_PER_TOKEN), output, images, seconds, duration)


def estimate_usd(pricing: dict[str, Any] | None, size: Size, output_kind: str | None) -> float | None:
    """USD a call will most likely cost, from its size; None when the model has no pricing, or is priced
    per second and nothing says how many (an image model billed by compute time).

    ``output_kind`` is the capability's output (``text``, ``image``, ``audio``, ...): it says whether
    per-image and per-second prices apply to generated media or to the input.
    """
    if not is_priced(pricing):
        return None
    assert pricing is not None
    usd = _number(pricing, "request", "per_request")
    usd += size.input_tokens * _number(pricing, "prompt")
    if output_kind == "text":
        usd += size.output_tokens * _number(pricing, "completion")
    if output_kind == "image":
        usd += size.images * _number(pricing, "per_image")
    usd += size.characters * _number(pricing, "per_character")
    per_second = _number(pricing, "per_second")
    if per_second:
        seconds = size.duration or size.seconds
        if not seconds and output_kind == "audio":
            seconds = size.characters / SPEECH_CHARS_PER_SECOND
        if not seconds:
            return None
        usd += seconds * per_second
    return round(usd, 10)


def actual_usd(pricing: dict[str, Any] | None, output: Asset, size: Size, estimate: float | None) -> tuple[float | None, str]:
    """USD the call cost and where that figure comes from: the provider's own ``cost.total`` when it put
    one (``api``: the API said; ``pricing``: it priced what only it knew, e.g. compute time), else
    ``pricing`` (reported usage x pricing), ``estimate`` (no usage reported: the estimate stands),
    ``unpriced``."""
    reported = output.metadata.get("cost")
    if isinstance(reported, dict) and isinstance(reported.get("total"), (int, float)) \
            and not isinstance(reported.get("total"), bool):
        return float(reported["total"]), str(reported.get("source") or "api")
    if not is_priced(pricing):
        return None, "unpriced"
    assert pricing is not None
    usage = output.metadata.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = _number(pricing, "prompt"), _number(pricing, "completion")
    if (prompt or completion) and "prompt_tokens" not in usage and "completion_tokens" not in usage:
        return estimate, "estimate"
    usd = _number(pricing, "request", "per_request")
    usd += int(usage.get("prompt_tokens") or 0) * prompt + int(usage.get("completion_tokens") or 0) * completion
    characters = usage.get("characters")
    usd += (characters if isinstance(characters, int) else size.characters) * _number(pricing, "per_character")
    if output.type == "image":
        usd += usage.get("images", 1) * _number(pricing, "per_image")
    per_second = _number(pricing, "per_second")
    if per_second:
        seconds = usage.get("seconds")
        if not isinstance(seconds, (int, float)):
            seconds = (audio_seconds(output) if output.type == "audio" else None) or size.duration or size.seconds
        if not seconds:
            return estimate, "estimate"
        usd += float(seconds) * per_second
    return round(usd, 10), "pricing"


def cost_record(estimated: float | None, usd: float | None, source: str, currency: str = "USD") -> dict[str, Any]:
    """The ``cost`` an asset's metadata carries: ``estimated_usd`` (before the call), ``usd`` (after it),
    ``total`` (the same as ``usd``, the field earlier results had), ``currency`` and ``source``."""
    return {"estimated_usd": estimated, "usd": usd, "total": usd, "currency": currency, "source": source}
