"""Ollama: local models over its native API (/api/tags, /api/generate, /api/pull; the last two stream NDJSON).

The server is wherever ``OLLAMA_BASE_URL`` says; without it, a Docker service named by
``OLLAMA_SERVICE_URL`` (or the manifest's ``serviceUrl``) is started, else ``localhost:11434``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from mediaconduit_worker import (
    ChatOptions,
    MediaCapability,
    OutputStream,
    ProviderHTTPError,
    ProviderModel,
    ProviderResponseError,
    ProviderType,
    RemoteProvider,
    Text,
    TextToTextModel,
    TransientError,
    input_text,
    usage_metadata,
)

log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "http://localhost:11434"
_FALSE = {"0", "false", "no", "off"}
T = TypeVar("T")


def canonical(name: str) -> str:
    """Ollama treats ``llama3.2`` and ``llama3.2:latest`` as the same model."""
    return name if ":" in name else f"{name}:latest"


class OllamaModel(TextToTextModel):
    """``/api/generate``, streamed (NDJSON) when the job's output has a reader; pulls the model first when the
    server does not have it."""

    provider: OllamaProvider

    def request_body(self, text: str, opts: ChatOptions) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.id, "prompt": text, "stream": False}
        if opts.system_prompt:
            body["system"] = opts.system_prompt
        if opts.response_format and opts.response_format.get("type") == "json_object":
            body["format"] = "json"
        elif opts.response_format and opts.response_format.get("type") == "json_schema":
            body["format"] = (opts.response_format.get("json_schema") or {}).get("schema", "json")
        sampling = {"temperature": opts.temperature, "top_p": opts.top_p, "num_predict": opts.max_tokens,
                    "stop": opts.stop, "seed": opts.seed}
        sampling = {k: v for k, v in sampling.items() if v is not None}
        if sampling:
            body["options"] = sampling
        return body

    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = ChatOptions.parse(options)
        pulled = self.provider.ensure_model(self.id)
        body = self.request_body(input_text(input), opts)
        reply, pulled_now = self.pulling_if_gone(lambda: self.provider.http.post_json("/api/generate", body))
        return self.output(reply, pulled or pulled_now, input, options, started)

    def stream(self, input: Any, options: dict[str, Any] | None = None) -> OutputStream:
        """The same call with ``stream: true``: NDJSON lines, each ``response`` piece a chunk, the last one
        ``done: true`` with the counts and timings; the ``Text`` that ``transform`` returns is that last line
        with the pieces joined as its ``response``. An ``error`` line fails naming the provider; a stream
        that ends before its ``done`` line is transient."""
        started = time.perf_counter()
        opts = ChatOptions.parse(options)
        pulled = self.provider.ensure_model(self.id)
        body = {**self.request_body(input_text(input), opts), "stream": True}

        def opened() -> tuple[Iterator[dict[str, Any]], dict[str, Any] | None]:
            lines = self.provider.http.stream_ndjson("POST", "/api/generate", json=body, what="/api/generate stream")
            return lines, next(lines, None)  # the request is sent, and a 404 raised, at the first line

        (lines, line), pulled_now = self.pulling_if_gone(opened)
        parts: list[str] = []
        last = None
        while line is not None:  # read to the end, so the response is closed and its connection reused
            piece = line.get("response")
            if isinstance(piece, str) and piece:
                parts.append(piece)
                yield piece
            if line.get("done"):
                last = line
            line = next(lines, None)
        if last is None:
            raise TransientError(f"{self.provider.label}: /api/generate stream ended before its done line")
        return self.output({**last, "response": "".join(parts)}, pulled or pulled_now, input, options, started)

    def pulling_if_gone(self, call: Callable[[], T]) -> tuple[T, bool]:
        """``call()``, and whether it needed a pull: a model deleted on the server since we listed it answers
        404, so it is pulled once more and called again."""
        try:
            return call(), False
        except ProviderHTTPError as exc:
            if exc.status != 404 or not self.provider.auto_pull:
                raise
        self.provider.pull(self.id)
        return call(), True

    def output(self, reply: Any, pulled: bool, input: Any, options: dict[str, Any] | None, started: float) -> Text:
        """An ``/api/generate`` reply (returned, or the stream's last line) as the ``Text`` output."""
        if not isinstance(reply, dict) or not isinstance(reply.get("response"), str):
            raise ProviderResponseError(f"{self.provider.label}: /api/generate response has no 'response' text")
        metadata: dict[str, Any] = {"response_model": reply.get("model", self.id), "finish_reason": reply.get("done_reason")}
        usage = usage_metadata(reply.get("prompt_eval_count"), reply.get("eval_count"))
        if usage:
            metadata["usage"] = usage
        if reply.get("total_duration"):
            metadata["timings_ms"] = {k[:-9]: round(reply[k] / 1e6, 3) for k in
                                      ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
                                      if isinstance(reply.get(k), (int, float))}
        if pulled:
            metadata["pulled"] = True
        metadata["generation_prompt"] = self.generation_prompt(input, options, started)
        return Text.from_string(reply["response"], metadata=metadata, source=input if isinstance(input, Text) else None)


class OllamaProvider(RemoteProvider):
    """Local inference: no API key; models from ``/api/tags``; unknown names are pulled on demand."""

    type = ProviderType.LOCAL
    config_env = {
        "base_url": "OLLAMA_BASE_URL",
        "service_url": "OLLAMA_SERVICE_URL",
        "timeout": "OLLAMA_TIMEOUT",
        "auto_pull": "OLLAMA_AUTO_PULL",
    }
    requires_api_key = False
    default_timeout = 600.0  # a cold model load on CPU can take minutes
    model_classes = {MediaCapability.TEXT_TO_TEXT: OllamaModel}

    def __init__(self) -> None:
        super().__init__()
        self._pull_lock = threading.Lock()

    @property
    def auto_pull(self) -> bool:
        return str(self.config.get("auto_pull", "1")).strip().lower() not in _FALSE

    @property
    def base_url(self) -> str:
        if self.config.get("base_url"):
            return str(self.config["base_url"]).rstrip("/")
        service = self.config.get("service_url") or (self.manifest.service_url if self.manifest else None)
        if service:
            return self.start_service(service).base_url.rstrip("/")
        return DEFAULT_BASE_URL

    def fetch_models(self) -> list[ProviderModel]:
        body = self.http.get_json("/api/tags")
        items = body.get("models") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ProviderResponseError(f"{self.label}: /api/tags response has no 'models' list")
        models = []
        for m in items:
            name = m.get("name") or m.get("model") if isinstance(m, dict) else None
            if not isinstance(name, str):
                continue
            details = m.get("details") or {}
            models.append(ProviderModel(
                id=name,
                name=name,
                description=" ".join(str(details[k]) for k in ("family", "parameter_size", "quantization_level") if details.get(k)) or None,
                capabilities=[MediaCapability.TEXT_TO_TEXT],
                parameters={"size": m.get("size"), "digest": m.get("digest"), "details": details},
            ))
        return models

    def has_model(self, name: str) -> bool:
        self._models = None  # ask the server: another worker may have pulled or removed it
        return canonical(name) in {canonical(m.id) for m in self.models}

    def get_model_info(self, model_id: str) -> ProviderModel:
        """Any name is a model: one the server lacks is pulled when first used."""
        for m in self.models:
            if canonical(m.id) == canonical(model_id):
                return m
        return ProviderModel(id=model_id, name=model_id, capabilities=[MediaCapability.TEXT_TO_TEXT],
                             parameters={"pulled": False})

    def ensure_model(self, name: str) -> bool:
        """Pull ``name`` unless the server has it; True when a pull happened."""
        if self.has_model(name):
            return False
        if not self.auto_pull:
            raise ProviderResponseError(
                f"{self.label}: model {name!r} is not on the Ollama server at {self.base_url} "
                "and OLLAMA_AUTO_PULL is off; pull it first (ollama pull)"
            )
        self.pull(name)
        return True

    def pull(self, name: str) -> None:
        """``POST /api/pull`` streaming NDJSON; progress is logged, an ``error`` line fails with its text."""
        with self._pull_lock:
            log.info("ollama: pulling %s from %s", name, self.base_url)
            status, last_pct, last_line = "", -10, None
            for line in self.http.stream_ndjson("POST", "/api/pull", json={"model": name, "stream": True},
                                                what=f"pulling model {name!r}"):
                last_line = line
                total, done = line.get("total"), line.get("completed")
                pct = int(done * 100 / total) if isinstance(total, int) and total and isinstance(done, int) else None
                if line.get("status") != status or (pct is not None and pct >= last_pct + 10):
                    status = str(line.get("status", ""))
                    last_pct = pct if pct is not None else -10
                    log.info("ollama pull %s: %s%s", name, status, f" {pct}%" if pct is not None else "")
            if not last_line or last_line.get("status") != "success":
                raise ProviderResponseError(
                    f"{self.label}: pulling model {name!r} ended without 'success' (last: {last_line!r})"
                )
            log.info("ollama: pulled %s", name)
            self._models = None
