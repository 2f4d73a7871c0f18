"""Stand-ins for the remote APIs the providers call: one local HTTP server speaking each API's
documented wire format (request paths, auth headers, JSON bodies, error bodies, NDJSON streams).

No real endpoint is reachable from the tests, so these answer instead. They are not mocks of our
code: the providers talk real HTTP to them through the SDK's HTTP layer. Every request is
recorded, and tests can script the next replies of a route (errors, delays, rate limits).

Prefixes: /openrouter/api/v1, /together/v1, /xai/v1, /openai/v1, /anthropic, /ollama, /elevenlabs,
and /raw for scripted-only replies used by the HTTP-layer tests.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import threading
import time
import wave
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

KEYS = {
    "openrouter": "sk-or-v1-standin-openrouter-0123456789",
    "together": "tgp-standin-together-0123456789",
    "xai": "xai-standin-grok-0123456789abcdef",
    "openai": "sk-proj-standin-openai-0123456789",
    "anthropic": "sk-ant-api03-standin-anthropic-0123456789",
    "elevenlabs": "el-standin-elevenlabs-0123456789",
}


def tiny_png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A real, decodable PNG built with zlib (what an image API would return)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def tiny_wav(seconds: float = 0.1, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return buf.getvalue()


FAKE_MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 64
PNG = tiny_png()
URL_PNG = tiny_png(3, 3, (10, 200, 10))


@dataclass
class Reply:
    """A scripted reply: status, JSON (or raw bytes/text) body, headers, optional delay, NDJSON lines."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None
    lines: list[Any] | None = None
    events: list[Any] | None = None
    """Server-sent events: each item is sent as one ``data:`` line (JSON, or a string as is), a ``Named`` one
    with its ``event:`` line, a ``Comment`` as a comment line."""
    cut_after: int | None = None
    """Break the connection after this many ``events`` or ``lines`` (no end of the chunked body): a stream
    that breaks."""
    event_delay: float = 0.0
    """Seconds before each event or line (a model generating tokens)."""


@dataclass(frozen=True)
class Named:
    """A server-sent event with its name: ``event: <name>`` then ``data: <JSON>`` (Anthropic's stream)."""

    name: str
    data: Any


@dataclass(frozen=True)
class Comment:
    """An SSE comment line, ``: <text>``, which clients ignore (OpenRouter's ``: OPENROUTER PROCESSING``)."""

    text: str


def sse(item: Any) -> bytes:
    """One event of ``Reply.events`` as it goes on the wire."""
    if isinstance(item, Comment):
        return f": {item.text}\n\n".encode()
    if isinstance(item, Named):
        return f"event: {item.name}\ndata: {json.dumps(item.data)}\n\n".encode()
    return f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n".encode()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float
    done: float | None = None
    """When the reply was written (``time.monotonic()``, as ``at``)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # an I/O pool's hundreds of threads connect at once


class StandInAPIs:
    """The server plus its state (recorded requests, scripted replies, Ollama's pulled models).

    ``latency`` seconds are added to every reply (benchmarks); a reply's ``delay`` ends early when
    the server stops, so a reply that "never comes" (a hung API) does not outlive the tests.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.requests: list[Recorded] = []
        self.scripts: dict[tuple[str, str], deque[Reply]] = defaultdict(deque)
        self.standing: dict[tuple[str, str], Reply] = {}
        self.delays: dict[str, float] = {}
        self.active: dict[str, int] = defaultdict(int)
        self.max_active: dict[str, int] = defaultdict(int)
        """Per path: requests being answered right now, and the most at once (what a concurrency limit bounds)."""
        self.ollama_models = ["llama3.2:latest"]
        self.lock = threading.Lock()
        self.latency = latency
        self.stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"apis": self})
        self.server = _Server(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> StandInAPIs:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def env(self) -> dict[str, str]:
        """Worker environment pointing every provider at this server, with the keys it accepts."""
        return {
            "OPENROUTER_BASE_URL": f"{self.url}/openrouter/api/v1", "OPENROUTER_API_KEY": KEYS["openrouter"],
            "TOGETHER_BASE_URL": f"{self.url}/together/v1", "TOGETHER_API_KEY": KEYS["together"],
            "XAI_BASE_URL": f"{self.url}/xai/v1", "XAI_API_KEY": KEYS["xai"],
            "OPENAI_BASE_URL": f"{self.url}/openai/v1", "OPENAI_API_KEY": KEYS["openai"],
            "ANTHROPIC_BASE_URL": f"{self.url}/anthropic", "ANTHROPIC_API_KEY": KEYS["anthropic"],
            "OLLAMA_BASE_URL": f"{self.url}/ollama",
            "ELEVENLABS_BASE_URL": f"{self.url}/elevenlabs", "ELEVENLABS_API_KEY": KEYS["elevenlabs"],
        }

    def script(self, method: str, path: str, *replies: Reply) -> None:
        """The next requests to ``method path`` get these replies, in order, before the normal ones."""
        with self.lock:
            self.scripts[(method, path)].extend(replies)

    def always(self, method: str, path: str, reply: Reply) -> None:
        """Every request to ``method path`` gets ``reply`` (after any scripted ones) until ``reset``."""
        with self.lock:
            self.standing[(method, path)] = reply

    def slow(self, path: str, seconds: float) -> None:
        """Every reply to ``path`` is sent ``seconds`` late (an API under load)."""
        with self.lock:
            self.delays[path] = seconds

    def calls(self, path: str, method: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.scripts.clear()
            self.standing.clear()
            self.delays.clear()
            self.max_active = defaultdict(int, self.active)  # requests still being answered stay counted
            self.ollama_models = ["llama3.2:latest"]


class _Handler(BaseHTTPRequestHandler):
    apis: StandInAPIs
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall between them

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- plumbing --------------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        rec = Recorded(method, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()},
                       body, time.monotonic())
        apis = self.apis
        with apis.lock:
            apis.requests.append(rec)
            queue = apis.scripts.get((method, parts.path))
            scripted = (queue.popleft() if queue else None) or apis.standing.get((method, parts.path))
            delay = apis.delays.get(parts.path, 0.0)
            apis.active[parts.path] += 1
            apis.max_active[parts.path] = max(apis.max_active[parts.path], apis.active[parts.path])
        try:
            reply = scripted or self._route(rec)
            if reply.delay or delay or apis.latency:
                apis.stopping.wait(reply.delay + delay + apis.latency)
            self._send(reply)
            rec.done = time.monotonic()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (timeout tests)
        finally:
            with apis.lock:
                apis.active[parts.path] -= 1

    def _send_chunked(self, reply: Reply, content_type: str, pieces: list[bytes]) -> None:
        """A chunked body, one chunk per piece, ``event_delay`` before each; cut off after ``cut_after``."""
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        for n, data in enumerate(pieces):
            if n == reply.cut_after:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # mid-body: the client sees the connection break
                return
            if reply.event_delay:
                self.apis.stopping.wait(reply.event_delay)
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _send(self, reply: Reply) -> None:
        if reply.events is not None:
            self._send_chunked(reply, "text/event-stream", [sse(item) for item in reply.events])
            return
        if reply.lines is not None:
            self._send_chunked(reply, "application/x-ndjson", [
                (line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in reply.lines])
            return
        if reply.raw is not None:
            data, ctype = reply.raw, reply.headers.get("Content-Type", "application/octet-stream")
        elif isinstance(reply.body, str):
            data, ctype = reply.body.encode(), "text/plain"
        else:
            data, ctype = json.dumps(reply.body if reply.body is not None else {}).encode(), "application/json"
        self.send_response(reply.status)
        headers = {"Content-Type": ctype, **reply.headers}
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, rec: Recorded) -> Reply:
        path = rec.path
        for prefix, fn in (
            ("/openrouter/api/v1", _openrouter), ("/together/v1", _together), ("/together/files", _together_files),
            ("/xai/v1", _xai), ("/openai/v1", _openai), ("/anthropic", _anthropic), ("/ollama", _ollama),
            ("/elevenlabs", _elevenlabs),
        ):
            if path == prefix or path.startswith(prefix + "/"):
                return fn(self.apis, rec, path[len(prefix):])
        return Reply(404, {"error": f"no stand-in route for {path}"})


# -- OpenAI-compatible APIs (OpenAI, OpenRouter, Together, X.AI) ------------------------------------
def _openai_error(status: int, message: str, kind: str, code: str | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


def _bearer_ok(rec: Recorded, api: str) -> Reply | None:
    auth = rec.headers.get("authorization", "")
    if not auth:
        return _openai_error(401, "You didn't provide an API key.", "invalid_request_error")
    if auth != f"Bearer {KEYS[api]}":
        # Real APIs echo (part of) the wrong key back; echo it whole to prove the client scrubs it.
        return _openai_error(401, f"Incorrect API key provided: {auth.removeprefix('Bearer ')}.",
                             "invalid_request_error", "invalid_api_key")
    return None


def _chat_reply(rec: Recorded, usage_extra: dict[str, Any] | None = None) -> Reply:
    body = rec.body if isinstance(rec.body, dict) else {}
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not body.get("model"):
        return _openai_error(400, "'messages' and 'model' are required", "invalid_request_error")
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    system = next((m["content"] for m in messages if m.get("role") == "system"), None)
    content = f"[{body['model']}] {user}" + (f" (system: {system})" if system else "")
    if (body.get("response_format") or {}).get("type") == "json_object":
        content = json.dumps({"model": body["model"], "echo": user})
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion_tokens = len(content.split())
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens, **(usage_extra or {})}
    if body.get("stream"):
        return Reply(200, events=chat_events(body["model"], content, usage if (body.get("stream_options") or {})
                                             .get("include_usage") else None))
    return Reply(200, {
        "id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage,
    })


def chat_events(model: str, content: str, usage: dict[str, Any] | None = None) -> list[Any]:
    """OpenAI's streamed chat completion: a role chunk, one ``chat.completion.chunk`` per word, the finish
    reason, the usage chunk (``choices`` empty) when asked for, then ``[DONE]``."""
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

    words = content.split(" ")
    events: list[Any] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": word if i == 0 else " " + word}) for i, word in enumerate(words)]
    events.append(chunk({}, "stop"))
    if usage is not None:
        events.append({**chunk({}), "choices": [], "usage": usage})
    return [*events, "[DONE]"]


OPENROUTER_MODELS = [
    {"id": "openai/gpt-4o-mini", "name": "OpenAI: GPT-4o-mini", "description": "Small GPT-4o", "context_length": 128000,
     "architecture": {"modality": "text+image->text", "input_modalities": ["text", "image"], "output_modalities": ["text"]},
     "pricing": {"prompt": "0.00000015", "completion": "0.0000006", "request": "0", "image": "0.000217"}},
    {"id": "meta-llama/llama-3.3-70b-instruct:free", "name": "Meta: Llama 3.3 70B Instruct (free)",
     "context_length": 131072, "architecture": {"modality": "text->text", "output_modalities": ["text"]},
     "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"}},
    {"id": "google/gemini-2.0-flash-exp:free", "name": "Google: Gemini 2.0 Flash (free)", "context_length": 1048576,
     "architecture": {"modality": "text+image->text", "output_modalities": ["text"]},
     "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"}},
    {"id": "openai/gpt-image-1", "name": "OpenAI: GPT Image 1", "context_length": 0,
     "architecture": {"modality": "text->image", "output_modalities": ["image"]},
     "pricing": {"prompt": "0.000005", "completion": "0.00004"}},
]


PROCESSING = Comment("OPENROUTER PROCESSING")
"""The comment OpenRouter sends while a stream waits for its first token (its docs: "SSE comments")."""


def openrouter_error_chunk(model: str, code: str, message: str) -> dict[str, Any]:
    """An error inside an OpenRouter stream (after its 200): a chunk with ``error`` and ``finish_reason: error``."""
    return {"id": "gen-standin", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "provider": "OpenAI", "error": {"code": code, "message": message},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}


def _openrouter(apis: StandInAPIs, rec: Recorded, sub: str) -> Reply:
    if sub == "/models" and rec.method == "GET":  # public: no key needed
        return Reply(200, {"data": OPENROUTER_MODELS})
    if sub == "/chat/completions" and rec.method == "POST":
        if err := _bearer_ok(rec, "openrouter"):
            err.body = {"error": {"code": 401, "message": err.body["error"]["message"]}}  # OpenRouter's shape
            return err
        model = (rec.body or {}).get("model")
        known = {m["id"]: m for m in OPENROUTER_MODELS}
        if model not in known:
            return Reply(400, {"error": {"code": 400, "message": f"{model} is not a valid model ID"}})
        extra = {}
        if ((rec.body or {}).get("usage") or {}).get("include"):
            extra["cost"] = 0.0000123
        reply = _chat_reply(rec, extra)
        if reply.events:  # OpenRouter keeps a stream alive with comments while the upstream model starts
            reply.events = [PROCESSING, PROCESSING, *reply.events]
        return reply
    return Reply(404, {"error": {"code": 404, "message": "Not Found"}})


TOGETHER_MODELS = [
    {"id": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "object": "model", "created": 1733443200, "type": "chat",
     "display_name": "Meta Llama 3.3 70B Instruct Turbo", "organization": "Meta", "context_length": 131072,
     "pricing": {"hourly": 0, "input": 0.88, "output": 0.88, "base": 0, "finetune": 0}},
    {"id": "mistralai/Mixtral-8x7B-v0.1", "object": "model", "created": 1702252800, "type": "language",
     "display_name": "Mixtral-8x7B", "organization": "mistralai", "context_length": 32768,
     "pricing": {"hourly": 0, "input": 0.6, "output": 0.6, "base": 0, "finetune": 0}},
    {"id": "black-forest-labs/FLUX.1-schnell", "object": "model", "created": 1733443200, "type": "image",
     "display_name": "FLUX.1 Schnell", "organization": "Black Forest Labs",
     "pricing": {"hourly": 0, "input": 0, "output": 0, "base": 0.0027, "finetune": 0}},
    {"id": "black-forest-labs/FLUX.1-dev", "object": "model", "created": 1733443200, "type": "image",
     "display_name": "FLUX.1 Dev", "organization": "Black Forest Labs",
     "pricing": {"hourly": 0, "input": 0, "output": 0, "base": 0.025, "finetune": 0}},
    {"id": "cartesia/sonic", "object": "model", "created": 1733443200, "type": "audio", "display_name": "Cartesia Sonic",
     "organization": "Cartesia", "pricing": {"hourly": 0, "input": 65, "output": 0, "base": 0, "finetune": 0}},
    {"id": "BAAI/bge-large-en-v1.5", "object": "model", "created": 1700000000, "type": "embedding",
     "display_name": "BGE Large", "organization": "BAAI", "pricing": {"hourly": 0, "input": 0.02, "output": 0}},
]


def _together(apis: StandInAPIs, rec: Recorded, sub: str) -> Reply:
    if err := _bearer_ok(rec, "together"):
        return err
    body = rec.body if isinstance(rec.body, dict) else {}
    if sub == "/models":
        return Reply(200, TOGETHER_MODELS)  # Together answers with a bare list
    if sub == "/chat/completions":
        return _chat_reply(rec)
    if sub == "/images/generations":
        if not body.get("prompt"):
            return _openai_error(400, "prompt is required", "invalid_request_error")
        item = ({"index": 0, "url": f"{apis.url}/together/files/generated.png"}
                if body.get("response_format") == "url"
                else {"index": 0, "b64_json": base64.b64encode(PNG).decode()})
        return Reply(200, {"id": "img-standin", "model": body.get("model"), "object": "list", "data": [item]})
    if sub == "/audio/speech":
        if body.get("response_format") == "wav":
            return Reply(200, raw=tiny_wav(), headers={"Content-Type": "audio/wav"})
        return Reply(200, raw=FAKE_MP3, headers={"Content-Type": "audio/mpeg"})
    return _openai_error(404, f"Unknown path {sub}", "not_found")


def _together_files(apis: StandInAPIs, rec: Recorded, sub: str) -> Reply:
    """Where generated-image URLs point (a CDN in reality): it needs no key, and must get none."""
    return Reply(200, raw=URL_PNG, headers={"Content-Type": "application/octet-stream"})


def _xai(apis: StandInAPIs, rec: Recorded, sub: str) -> Reply:
    if err := _bearer_ok(rec, "xai"):
        return err
    if sub == "/chat/completions":
        return _chat_reply(rec)
    if sub == "/models":
        return Reply(200, {"object": "list", "data": [{"id": "grok-4", "object": "model", "owned_by": "xai"}]})
    return _openai_error(404, "Not found", "not_found")


OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "o3-mini", "text-embedding-3-small", "whisper-1", "tts-1", "dall-e-3",
                 "gpt-4o-realtime-preview", "gpt-4o-mini-transcribe"]


def _openai(apis: StandInAPIs, rec: Recorded, sub: str) -> Reply:
    if err := _bearer_ok(rec, "openai"):
        return err
    if sub == "/models":
        return Reply(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "openai"} for m in OPENAI_MODELS]})
    if sub == "/chat/completions":
        model = (rec.body or {}).get("model")
        if model not in OPENAI_MODELS:
            return _openai_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                                 "invalid_request_error", "model_not_found")
        return _chat_reply(rec)
    return _openai_error(404, "Invalid URL", "invalid_request_error")


# -- Anthropic Messages API ----------------------------------------------------------------------
def _anthropic_error(status: int, kind: str, message: str) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}})


ANTHROPIC_MODELS = [
    {"type": "model", "id": "claude-sonnet-4-5-20250929", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"},
    {"type": "model", "id": "claude-haiku-4-5-20251001", "display_name": "Claude Haiku 4.5", "created_at": "2025-10-01T00:00:00Z"},
]


def _anthropic(apis: StandInAPIs, rec: Recorded, sub: str) -> Reply:
    key = rec.headers.get("x-api-key")
    if not key:
        return _anthropic_error(401, "authentication_error", "x-api-key header is required")
    if key != KEYS["anthropic"]:
        return _anthropic_error(401, "authentication_error", "invalid x-api-key")
    if not rec.headers.get("anthropic-version"):
        return _anthropic_error(400, "invalid_request_error", "anthropic-version: header is required")
    if sub == "/v1/models":
        return Reply(200, {"data": ANTHROPIC_MODELS, "has_more": False, "first_id": ANTHROPIC_MODELS[0]["id"],
                           "last_id": ANTHROPIC_MODELS[-1]["id"]})
    if sub != "/v1/messages":
        return _anthropic_error(404, "not_found_error", "Not found")
    body = rec.body if isinstance(rec.body, dict) else {}
    if not isinstance(body.get("max_tokens"), int):
        return _anthropic_error(400, "invalid_request_error", "max_tokens: Field required")
    messages = body.get("messages") or []
    if any(m.get("role") == "system" for m in messages):
        return _anthropic_error(400, "invalid_request_error",
                                "messages: Unexpected role \"system\". Use the top-level `system` parameter.")
    user = messages[-1]["content"] if messages else ""
    text = f"[{body.get('model')}] {user}" + (f" (system: {body['system']})" if body.get("system") else "")
    usage = {"input_tokens": len(str(user).split()) + 3, "output_tokens": len(text.split()),
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if body.get("stream"):
        return Reply(200, events=anthropic_events(str(body.get("model")), text, usage))
    return Reply(200, {
        "id": "msg_standin", "type": "message", "role": "assistant", "model": body.get("model"),
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": usage,
    })


def anthropic_events(model: str, text: str, usage: dict[str, Any] | None = None) -> list[Any]:
    """The Messages API's event stream as Anthropic documents it: ``message_start`` (the message, empty, with
    the input usage), ``content_block_start``, a ``ping``, one ``content_block_delta`` (``text_delta``) per
    word, ``content_block_stop``, ``message_delta`` (stop reason, cumulative output tokens), ``message_stop``."""
    usage = usage or {"input_tokens": 3, "output_tokens": len(text.split())}
    start = {"id": "msg_standin", "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    words = text.split(" ")
    return [
        Named("message_start", {"type": "message_start", "message": start}),
        Named("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}),
        Named("ping", {"type": "ping"}),
        *(Named("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}})
          for i, word in enumerate(words)),
        Named("content_block_stop", {"type": "content_block_stop", "index": 0}),
        Named("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": usage["output_tokens"]}}),
        Named("message_stop", {"type": "message_stop"}),
    ]


def anthropic_error_event(kind: str = "overloaded_error", message: str = "Overloaded") -> Named:
    """The ``error`` event Anthropic sends inside a stream that has already answered 200."""
    return Named("error", {"type": "error", "error": {"type": kind, "message": message}})


# -- Ollama native API -----------------------------------------------------------------------------
OLLAMA_DONE = {"created_at": "2025-01-01T00:00:00Z", "done": True, "done_reason": "stop", "context": [1, 2, 3],
               "total_duration": 5_000_000_000, "load_duration": 1_000_000, "prompt_eval_count": 26,
               "prompt_eval_duration": 130_000_000, "eval_count": 12, "eval_duration": 900_000_000}
"""The last object of ``/api/generate``: its counts and timings (the whole reply, with ``response``, unstreamed)."""


def ollama_lines(model: str, text: str) -> list[Any]:
    """``/api/generate`` streamed as Ollama documents it: one ``{"response": piece, "done": false}`` line per
    word, then the ``done: true`` line with an empty ``response``, the counts and timings."""
    words = text.split(" ")
    pieces = [{"model": model, "created_at": "2025-01-01T00:00:00Z", "response": word if i == 0 else " " + word,
               "done": False} for i, word in enumerate(words)]
    return [*pieces, {**OLLAMA_DONE, "model": model, "response": ""}]


def _canon(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _ollama(apis: StandInAPIs, rec: Recorded, sub: str) -> Reply:
    body = rec.body if isinstance(rec.body, dict) else {}
    if sub == "/api/tags":
        return Reply(200, {"models": [
            {"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 2019393189,
             "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
             "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                         "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}}
            for m in apis.ollama_models]})
    if sub == "/api/pull":
        name = body.get("model") or body.get("name") or ""
        if name.startswith("no-such-model"):
            return Reply(200, lines=[{"status": "pulling manifest"},
                                     {"error": "pull model manifest: file does not exist"}])
        digest = "sha256:" + "ab" * 32
        apis.ollama_models.append(_canon(name))
        return Reply(200, lines=[
            {"status": "pulling manifest"},
            {"status": f"pulling {digest[7:19]}", "digest": digest, "total": 1000, "completed": 0},
            {"status": f"pulling {digest[7:19]}", "digest": digest, "total": 1000, "completed": 500},
            {"status": f"pulling {digest[7:19]}", "digest": digest, "total": 1000, "completed": 1000},
            {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"},
        ])
    if sub == "/api/generate":
        model = body.get("model", "")
        if _canon(model) not in apis.ollama_models:
            return Reply(404, {"error": f"model \"{model}\" not found, try pulling it first"})
        text = f"[{model}] {body.get('prompt', '')}" + (f" (system: {body['system']})" if body.get("system") else "")
        if body.get("format") == "json":
            text = json.dumps({"echo": body.get("prompt", "")})
        if body.get("stream", True):  # Ollama streams unless told not to
            return Reply(200, lines=ollama_lines(model, text))
        return Reply(200, {**OLLAMA_DONE, "model": model, "response": text})
    return Reply(404, "404 page not found")


# -- ElevenLabs --------------------------------------------------------------------------------------
ELEVENLABS_VOICES = [
    {"voice_id": "21m00Tcm4TlvDq8ikWAM", "name": "Rachel", "category": "premade",
     "labels": {"accent": "american", "gender": "female"}, "description": "Calm narration",
     "preview_url": "https://storage.example/rachel.mp3"},
    {"voice_id": "pNInz6obpgDQGcFmaJgB", "name": "Adam", "category": "premade",
     "labels": {"accent": "american", "gender": "male"}, "description": None,
     "preview_url": "https://storage.example/adam.mp3"},
]
_TTS = re.compile(r"^/v1/text-to-speech/([^/]+)$")


def _elevenlabs(apis: StandInAPIs, rec: Recorded, sub: str) -> Reply:
    key = rec.headers.get("xi-api-key")
    if key != KEYS["elevenlabs"]:
        return Reply(401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
    if sub == "/v1/voices":
        return Reply(200, {"voices": ELEVENLABS_VOICES})
    if m := _TTS.match(sub):
        if m.group(1) not in {v["voice_id"] for v in ELEVENLABS_VOICES}:
            return Reply(404, {"detail": {"status": "voice_not_found",
                                          "message": f"A voice with the voice_id {m.group(1)} was not found."}})
        body = rec.body if isinstance(rec.body, dict) else {}
        if not body.get("text"):
            return Reply(422, {"detail": [{"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}]})
        return Reply(200, raw=FAKE_MP3, headers={"Content-Type": "audio/mpeg", "character-cost": str(len(body["text"])),
                                                 "request-id": "req-standin"})
    return Reply(404, {"detail": {"status": "not_found", "message": "Not found"}})
