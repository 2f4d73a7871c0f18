"""OpenAI-compatible APIs (OpenAI, OpenRouter, Together, X.AI, ...): client, base models, base provider.

A provider for such an API is a few lines: subclass ``OpenAICompatProvider``, name its
``config_env`` and ``default_base_url``, and say how a ``/models`` entry maps to a
``ProviderModel`` if the API lists models. Chat, image generation and speech come from here.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from .assets import Audio, Image, Text
from .capabilities import MediaCapability
from .chat import ChatOptions, cost_metadata, usage_metadata
from .errors import InvalidInputError
from .http import HttpClient, ProviderResponseError
from .models import Model, OutputStream, TextToAudioModel, TextToImageModel, TextToTextModel, input_text
from .provider import ProviderModel
from .remote import RemoteProvider


class OpenAICompatAPI:
    """The four endpoints, with response shapes checked so a wrong reply is a clear error."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    def _bad(self, what: str, detail: str) -> ProviderResponseError:
        return ProviderResponseError(self.http.scrub(f"{self.http.provider}: {what} response {detail}"))

    def list_models(self) -> list[dict[str, Any]]:
        """``GET /models``: ``{"data": [...]}`` (OpenAI, OpenRouter) or a bare list (Together)."""
        body = self.http.get_json("/models")
        items = body.get("data") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise self._bad("GET /models", f"has no model list (got {type(body).__name__})")
        return [m for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /chat/completions``; the reply must carry ``choices[0].message``."""
        reply = self.http.post_json("/chat/completions", body)
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._bad("chat completion", "has no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise self._bad("chat completion", "has no message in choices[0]")
        return reply

    def chat_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """``POST /chat/completions`` with ``stream: true``: its ``chat.completion.chunk`` objects."""
        return self.http.stream_sse("POST", "/chat/completions", json=body, what="chat completion stream")

    def images(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /images/generations``; the reply must carry ``data[0]`` with ``b64_json`` or ``url``."""
        reply = self.http.post_json("/images/generations", body)
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise self._bad("image generation", "has no data")
        if not (data[0].get("b64_json") or data[0].get("url")):
            raise self._bad("image generation", "has neither b64_json nor url in data[0]")
        return reply

    def speech(self, body: dict[str, Any]) -> tuple[bytes, str]:
        """``POST /audio/speech``: raw audio and its content type."""
        data, content_type = self.http.request_bytes("POST", "/audio/speech", json=body)
        if not data:
            raise self._bad("speech", "is empty")
        if content_type.startswith(("application/json", "text/")):
            raise self._bad("speech", f"is {content_type}, not audio: {data[:200]!r}")
        return data, content_type


def message_text(message: dict[str, Any]) -> str:
    """``content`` as a string (some APIs send a list of parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def sniff_image_mime(data: bytes, fallback: str = "image/png") -> str:
    """The real type of image bytes (APIs often say octet-stream)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return fallback


AUDIO_MIME = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg", "aac": "audio/aac",
              "flac": "audio/flac", "pcm": "audio/L16", "raw": "audio/L16"}


def _source(input: Any) -> Any:
    return input if isinstance(input, Text) else None


class OpenAICompatChatModel(TextToTextModel):
    """``/chat/completions``: the input as the user turn, options mapped, usage and cost in metadata."""

    provider: OpenAICompatProvider

    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        self.provider.ensure_configured()
        opts = ChatOptions.parse(options)
        body = self.provider.chat_body(self, input_text(input), opts)
        reply = self.provider.api.chat(body)
        choice = reply["choices"][0]
        metadata = self.provider.chat_metadata(self, reply)
        metadata["generation_prompt"] = self.generation_prompt(input, options, started)
        return Text.from_string(message_text(choice["message"]), metadata=metadata, source=_source(input))

    def stream(self, input: Any, options: dict[str, Any] | None = None) -> OutputStream:
        """The same call with ``stream: true``: each content delta as it arrives, then the ``Text`` that
        ``transform`` returns (usage from the stream's last chunk, ``stream_options.include_usage``)."""
        started = time.perf_counter()
        self.provider.ensure_configured()
        opts = ChatOptions.parse(options)
        body = {**self.provider.chat_body(self, input_text(input), opts), "stream": True,
                "stream_options": {"include_usage": True}}
        parts: list[str] = []
        reply: dict[str, Any] = {"model": self.id}
        finish = None
        for chunk in self.provider.api.chat_stream(body):
            if isinstance(chunk.get("model"), str):
                reply["model"] = chunk["model"]
            if isinstance(chunk.get("usage"), dict):
                reply["usage"] = chunk["usage"]
            choices = chunk.get("choices")
            choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
            finish = choice.get("finish_reason") or finish
            delta = choice.get("delta")
            text = message_text(delta) if isinstance(delta, dict) else ""
            if text:
                parts.append(text)
                yield text
        content = "".join(parts)
        reply["choices"] = [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}]
        metadata = self.provider.chat_metadata(self, reply)
        metadata["generation_prompt"] = self.generation_prompt(input, options, started)
        return Text.from_string(content, metadata=metadata, source=_source(input))


class OpenAICompatImageModel(TextToImageModel):
    """``/images/generations``: base64 or URL results become an ``Image`` asset (stored as a blob)."""

    provider: OpenAICompatProvider
    passthrough: ClassVar[tuple[str, ...]] = ("size", "width", "height", "steps", "seed", "quality", "style",
                                              "negative_prompt", "guidance", "n")

    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Image:
        started = time.perf_counter()
        self.provider.ensure_configured()
        opts = dict(options or {})
        fmt = opts.get("responseFormat", opts.get("response_format", "b64_json"))
        if fmt not in ("b64_json", "url"):
            raise InvalidInputError(f"option 'responseFormat' for images must be 'b64_json' or 'url', got {fmt!r}")
        body: dict[str, Any] = {"model": self.id, "prompt": input_text(input), "response_format": fmt}
        body.update({k: opts[k] for k in self.passthrough if k in opts})
        reply = self.provider.api.images(body)
        item = reply["data"][0]
        if item.get("b64_json"):
            try:
                data = base64.b64decode(item["b64_json"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProviderResponseError(f"{self.provider.label}: image generation returned invalid base64: {exc}") from None
            origin = "b64_json"
        else:
            data, _ = self.provider.http.download(item["url"])
            origin = "url"
        metadata: dict[str, Any] = {"image_source": origin, "response_model": reply.get("model", self.id)}
        if item.get("revised_prompt"):
            metadata["revised_prompt"] = item["revised_prompt"]
        metadata["generation_prompt"] = self.generation_prompt(input, options, started)
        return Image.from_bytes(data, sniff_image_mime(data), metadata=metadata, source=_source(input))  # type: ignore[return-value]


class OpenAICompatSpeechModel(TextToAudioModel):
    """``/audio/speech``: the audio bytes become an ``Audio`` asset (stored as a blob)."""

    provider: OpenAICompatProvider

    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Audio:
        started = time.perf_counter()
        self.provider.ensure_configured()
        opts = dict(options or {})
        text = input_text(input)
        fmt = str(opts.get("format", opts.get("response_format", self.provider.default_audio_format)))
        body: dict[str, Any] = {"model": self.id, "input": text, "voice": opts.get("voice", self.provider.default_voice),
                                "response_format": fmt}
        if "speed" in opts:
            body["speed"] = opts["speed"]
        data, content_type = self.provider.api.speech(body)
        mime = content_type if content_type.startswith("audio/") else AUDIO_MIME.get(fmt, "application/octet-stream")
        metadata: dict[str, Any] = {"voice": body["voice"], "format": fmt, "usage": {"characters": len(text)}}
        metadata["generation_prompt"] = self.generation_prompt(input, options, started)
        return Audio.from_bytes(data, mime, metadata=metadata, source=_source(input))  # type: ignore[return-value]


class OpenAICompatProvider(RemoteProvider):
    """An OpenAI-compatible API; override ``model_from_api`` to map its ``/models`` entries."""

    model_classes: ClassVar[dict[MediaCapability, type[Model]]] = {
        MediaCapability.TEXT_TO_TEXT: OpenAICompatChatModel,
        MediaCapability.TEXT_TO_IMAGE: OpenAICompatImageModel,
        MediaCapability.TEXT_TO_AUDIO: OpenAICompatSpeechModel,
    }
    lists_models: ClassVar[bool] = True
    listing_needs_key: ClassVar[bool] = True
    default_voice: ClassVar[str] = "alloy"
    default_audio_format: ClassVar[str] = "mp3"

    @property
    def api(self) -> OpenAICompatAPI:
        return OpenAICompatAPI(self.http)

    def fetch_models(self) -> list[ProviderModel]:
        if not self.lists_models:
            return []
        if self.listing_needs_key:
            self.ensure_configured()
        models = (self.model_from_api(entry) for entry in self.api.list_models())
        return [m for m in models if m is not None]

    def model_from_api(self, entry: dict[str, Any]) -> ProviderModel | None:
        """A ``/models`` entry as a model, or None to skip it; by default every entry is a chat model."""
        return ProviderModel(id=entry["id"], name=entry.get("name") or entry["id"],
                             description=entry.get("description"), capabilities=[MediaCapability.TEXT_TO_TEXT])

    def chat_body(self, model: Model, text: str, opts: ChatOptions) -> dict[str, Any]:
        """The request body; providers add their own fields (e.g. OpenRouter's usage accounting)."""
        return {"model": model.id, "messages": opts.messages(text), **opts.openai_params()}

    def chat_metadata(self, model: Model, reply: dict[str, Any]) -> dict[str, Any]:
        """Usage, cost (reported, else from the model's pricing), finish reason and the serving model."""
        raw = reply.get("usage")
        raw = raw if isinstance(raw, dict) else {}
        usage = usage_metadata(raw.get("prompt_tokens"), raw.get("completion_tokens"), raw.get("total_tokens"))
        pricing = self.pricing_of(model.id)
        cost = cost_metadata(usage, pricing, reported=raw.get("cost"))
        choice = reply["choices"][0]
        metadata: dict[str, Any] = {"response_model": reply.get("model", model.id)}
        if choice.get("finish_reason"):
            metadata["finish_reason"] = choice["finish_reason"]
        if usage:
            metadata["usage"] = usage
        if cost:
            metadata["cost"] = cost
        return metadata
