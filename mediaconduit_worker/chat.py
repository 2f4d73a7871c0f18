"""Chat options and usage accounting shared by every LLM provider, whatever its wire format.

Jobs spell options the way the original system did (``systemPrompt``, ``maxOutputTokens``,
``topP``, ``responseFormat``); snake_case and the OpenAI names are accepted too. Parsing them in
one place gives every provider the same validation errors and the same metadata shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInputError

_ALIASES: dict[str, tuple[str, ...]] = {
    "system_prompt": ("systemPrompt", "system_prompt", "system"),
    "temperature": ("temperature",),
    "max_tokens": ("maxOutputTokens", "max_output_tokens", "maxTokens", "max_tokens"),
    "top_p": ("topP", "top_p"),
    "response_format": ("responseFormat", "response_format"),
    "stop": ("stop", "stopSequences", "stop_sequences"),
    "seed": ("seed",),
}


def _pick(options: dict[str, Any], name: str) -> Any:
    for alias in _ALIASES[name]:
        if options.get(alias) is not None:
            return options[alias]
    return None


def _number(options: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = _pick(options, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidInputError(f"option {_ALIASES[name][0]!r} must be a number between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _response_format(value: Any) -> dict[str, Any] | None:
    """``"json"``/``"json_object"``/``"text"``, an OpenAI ``response_format`` object, or a bare JSON schema."""
    if value is None:
        return None
    if isinstance(value, str):
        kind = value.strip().lower()
        if kind in ("json", "json_object"):
            return {"type": "json_object"}
        if kind == "text":
            return {"type": "text"}
        raise InvalidInputError(f"option 'responseFormat' must be 'text', 'json' or an object, got {value!r}")
    if isinstance(value, dict):
        if "type" in value:
            return value
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": value}}
    raise InvalidInputError(f"option 'responseFormat' must be a string or an object, got {type(value).__name__}")


@dataclass
class ChatOptions:
    """The generation options a job may set, validated."""

    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    response_format: dict[str, Any] | None = None
    stop: list[str] | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> ChatOptions:
        opts = dict(options or {})
        system = _pick(opts, "system_prompt")
        if system is not None and not isinstance(system, str):
            raise InvalidInputError(f"option 'systemPrompt' must be a string, got {type(system).__name__}")
        max_tokens = _pick(opts, "max_tokens")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
            raise InvalidInputError(f"option 'maxOutputTokens' must be a positive integer, got {max_tokens!r}")
        stop = _pick(opts, "stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise InvalidInputError(f"option 'stop' must be a string or a list of strings, got {stop!r}")
        seed = _pick(opts, "seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidInputError(f"option 'seed' must be an integer, got {seed!r}")
        known = {alias for aliases in _ALIASES.values() for alias in aliases}
        return cls(
            system_prompt=system,
            temperature=_number(opts, "temperature", 0.0, 2.0),
            max_tokens=max_tokens,
            top_p=_number(opts, "top_p", 0.0, 1.0),
            response_format=_response_format(_pick(opts, "response_format")),
            stop=stop,
            seed=seed,
            extra={k: v for k, v in opts.items() if k not in known},
        )

    @property
    def wants_json(self) -> bool:
        return self.response_format is not None and self.response_format.get("type") in ("json_object", "json_schema")

    def messages(self, text: str) -> list[dict[str, str]]:
        """OpenAI-style messages: the system prompt (if any), then the input as the user turn."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": "user", "content": text}]

    def openai_params(self) -> dict[str, Any]:
        """The OpenAI chat-completions spelling of these options (None values left out)."""
        params = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "response_format": self.response_format,
            "stop": self.stop,
            "seed": self.seed,
        }
        return {k: v for k, v in params.items() if v is not None}


def usage_metadata(prompt_tokens: Any, completion_tokens: Any, total_tokens: Any = None, **extra: Any) -> dict[str, Any] | None:
    """Token usage in one shape for every provider; None when the API reported nothing."""
    if prompt_tokens is None and completion_tokens is None and total_tokens is None:
        return None
    p = int(prompt_tokens or 0)
    c = int(completion_tokens or 0)
    usage: dict[str, Any] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": int(total_tokens or p + c)}
    usage.update({k: v for k, v in extra.items() if v is not None})
    return usage


def per_token_price(value: Any, per: float = 1.0) -> float | None:
    """A price as a float per token; ``per`` is how many tokens the API's figure is for (1e6 for Together)."""
    if value is None or value == "":
        return None
    try:
        return float(value) / per
    except (TypeError, ValueError):
        return None


def cost_metadata(usage: dict[str, Any] | None, pricing: dict[str, Any] | None, reported: Any = None) -> dict[str, Any] | None:
    """The API's own cost figure when it gives one, else usage × the model's per-token pricing."""
    if reported is not None:
        try:
            return {"total": float(reported), "currency": "USD", "source": "api"}
        except (TypeError, ValueError):
            pass
    if not usage or not pricing:
        return None
    prompt_price, completion_price = pricing.get("prompt"), pricing.get("completion")
    if prompt_price is None and completion_price is None:
        return None
    total = usage.get("prompt_tokens", 0) * (prompt_price or 0.0) + usage.get("completion_tokens", 0) * (completion_price or 0.0)
    return {"total": round(total, 10), "currency": pricing.get("currency", "USD"), "source": "pricing"}
