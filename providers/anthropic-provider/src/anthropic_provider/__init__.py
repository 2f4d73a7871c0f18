"""Anthropic: Claude over the Messages API (``x-api-key`` + ``anthropic-version``), not OpenAI-compatible; it
streams from the API's event stream (``stream: true``)."""

from __future__ import annotations

import time
from typing import Any

from mediaconduit_worker import (
    ChatOptions,
    MediaCapability,
    OutputStream,
    ProviderModel,
    ProviderResponseError,
    RemoteProvider,
    Text,
    TextToTextModel,
    cost_metadata,
    input_text,
    usage_metadata,
)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
JSON_INSTRUCTION = "Respond with a single valid JSON value and nothing else."
TRANSIENT_ERRORS = frozenset({"overloaded_error", "rate_limit_error", "api_error"})
"""A stream's ``error`` event types worth another try: those of HTTP 529, 429 and 500 (Anthropic's error docs)."""
# Published USD prices per million input/output tokens, by model family (first match wins).
PRICING = [
    ("claude-opus-4", 15.0, 75.0),
    ("claude-3-opus", 15.0, 75.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-haiku-4", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-haiku", 0.25, 1.25),
]


def pricing_for(model_id: str) -> dict[str, Any] | None:
    for prefix, prompt, completion in PRICING:
        if model_id.startswith(prefix):
            return {"prompt": prompt / 1e6, "completion": completion / 1e6, "currency": "USD"}
    return None


class AnthropicChatModel(TextToTextModel):
    """One Messages API call; the system prompt goes in ``system``, JSON output is asked for in words."""

    provider: AnthropicProvider

    def request_body(self, text: str, opts: ChatOptions) -> dict[str, Any]:
        system = opts.system_prompt
        if opts.wants_json:
            system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
        body: dict[str, Any] = {
            "model": self.id,
            "max_tokens": opts.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": text}],
        }
        optional = {"system": system, "temperature": opts.temperature, "top_p": opts.top_p, "stop_sequences": opts.stop}
        body.update({k: v for k, v in optional.items() if v is not None})
        return body

    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        self.provider.ensure_configured()
        opts = ChatOptions.parse(options)
        reply = self.provider.http.post_json("/v1/messages", self.request_body(input_text(input), opts))
        return self.output(reply, input, options, started)

    def stream(self, input: Any, options: dict[str, Any] | None = None) -> OutputStream:
        """The same call with ``stream: true``: each ``text_delta`` as it arrives, then the ``Text`` that
        ``transform`` returns, the reply rebuilt from the events (``message_start``'s message, its usage
        updated by ``message_delta``'s cumulative counts, the stop reason from ``message_delta``)."""
        started = time.perf_counter()
        self.provider.ensure_configured()
        opts = ChatOptions.parse(options)
        body = {**self.request_body(input_text(input), opts), "stream": True}
        reply: dict[str, Any] = {"model": self.id}
        usage: dict[str, Any] = {}
        parts: list[str] = []
        for event in self.provider.http.stream_sse("POST", "/v1/messages", json=body, what="Messages API stream",
                                                   end_event="message_stop", transient=TRANSIENT_ERRORS):
            kind = event.get("type")
            if kind == "message_start" and isinstance(event.get("message"), dict):
                message = event["message"]
                reply["model"] = message.get("model", self.id)
                usage.update(message.get("usage") or {})
            elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
                delta = event["delta"]
                if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
                    parts.append(delta["text"])
                    yield delta["text"]
            elif kind == "message_delta":
                reply["stop_reason"] = (event.get("delta") or {}).get("stop_reason")
                usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            # ping, content_block_start/stop, message_stop and event types added later carry no text
        reply.update(content=[{"type": "text", "text": "".join(parts)}], usage=usage)
        return self.output(reply, input, options, started)

    def output(self, reply: Any, input: Any, options: dict[str, Any] | None, started: float) -> Text:
        """A Messages API reply (returned, or rebuilt from a stream) as the ``Text`` output."""
        blocks = reply.get("content") if isinstance(reply, dict) else None
        if not isinstance(blocks, list):
            raise ProviderResponseError(f"{self.provider.label}: Messages API response has no content list")
        text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        raw = reply.get("usage") or {}
        usage = usage_metadata(
            raw.get("input_tokens"), raw.get("output_tokens"), None,
            cache_creation_input_tokens=raw.get("cache_creation_input_tokens"),
            cache_read_input_tokens=raw.get("cache_read_input_tokens"),
        )
        metadata: dict[str, Any] = {"response_model": reply.get("model", self.id), "finish_reason": reply.get("stop_reason")}
        if usage:
            metadata["usage"] = usage
            cost = cost_metadata(usage, pricing_for(self.id))
            if cost:
                metadata["cost"] = cost
        metadata["generation_prompt"] = self.generation_prompt(input, options, started)
        return Text.from_string(text, metadata=metadata, source=input if isinstance(input, Text) else None)


class AnthropicProvider(RemoteProvider):
    """Models: the manifest's, plus ``GET /v1/models`` when the key allows."""

    config_env = {
        "api_key": "ANTHROPIC_API_KEY",
        "base_url": "ANTHROPIC_BASE_URL",
        "timeout": "ANTHROPIC_TIMEOUT",
        "version": "ANTHROPIC_VERSION",
    }
    default_base_url = "https://api.anthropic.com"
    model_classes = {MediaCapability.TEXT_TO_TEXT: AnthropicChatModel}

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key()}

    def extra_headers(self) -> dict[str, str]:
        return {"anthropic-version": str(self.config.get("version") or API_VERSION)}

    def discover_models(self) -> list[ProviderModel]:
        """Every model priced, the manifest's aliases (``claude-haiku-4-5``) as well as the dated ids listed."""
        models = super().discover_models()
        for m in models:
            m.pricing = m.pricing or pricing_for(m.id)
        return models

    def fetch_models(self) -> list[ProviderModel]:
        self.ensure_configured()
        body = self.http.get_json("/v1/models", params={"limit": 1000})
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ProviderResponseError(f"{self.label}: GET /v1/models response has no data list")
        return [
            ProviderModel(
                id=m["id"],
                name=m.get("display_name") or m["id"],
                capabilities=[MediaCapability.TEXT_TO_TEXT],
                parameters={"created_at": m.get("created_at")},
                pricing=pricing_for(m["id"]),
            )
            for m in items
            if isinstance(m, dict) and isinstance(m.get("id"), str)
        ]
