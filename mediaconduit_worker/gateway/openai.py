"""The OpenAI-compatible surface: ``GET /v1/models``, ``POST /v1/chat/completions``, ``/v1/images/generations``,
``/v1/audio/speech`` and ``/v1/audio/transcriptions``, so an OpenAI client whose ``base_url`` is
``http://HOST:PORT/v1`` and whose API key is a tenant's key runs its calls as jobs, each on a route of the
call's capability.

A ``model`` is a route of the operator's routes file (``worker/routes.py``) or an alias it declares, never a
provider URL: the route picks its candidates, with their failover, limits and budgets. Each call is one job, created as
``POST /v1/jobs`` creates one (``submit.create``: the tenant's checks, rate and budget, its record in the job
list and in Flower). A streamed call follows the job's output chunks (``worker/chunks.py``) in its event
stream and answers them as ``chat.completion.chunk`` server-sent events; a client that goes away leaves
the job to finish and be recorded. Errors are OpenAI's ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..blobs import BlobStore
from ..capabilities import MediaCapability
from ..chat import ChatOptions
from ..errors import InvalidInputError, MediaLimitError, RouteError
from ..worker.events import FINAL, OUTPUT, STATUS, stream_key
from .auth import tenant
from .context import Gateway, gateway_of
from .events import _stored_state
from .problems import Problem
from .records import JobRecord
from .schemas import JobIn

if TYPE_CHECKING:
    from ..worker.routes import Route

router = APIRouter(tags=["openai"])
BLOCK_MS = 1000
"""Longest single ``XREAD`` wait, so a job whose final event was lost is noticed by its stored state."""
JOB_HEADER = "X-MediaConduit-Job-Id"
COST_HEADER = "X-MediaConduit-Cost-USD"
#: OpenAI's error ``type`` for an HTTP status.
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
                422: "invalid_request_error", 429: "rate_limit_exceeded"}
#: Request fields mapped to the job's options (``chat.ChatOptions`` spellings); others listed in _IGNORED.
_OPTIONS = {"temperature": "temperature", "max_tokens": "maxOutputTokens", "max_completion_tokens": "maxOutputTokens",
            "top_p": "topP", "stop": "stop", "seed": "seed", "response_format": "responseFormat"}
_IGNORED = frozenset({"model", "messages", "stream", "stream_options", "user", "n", "store", "metadata"})


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers or {}

    def body(self) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(self.status, "api_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _from_problem(problem: Problem) -> OpenAIError:
    body = problem.body()
    code = "invalid_api_key" if problem.status == 401 else problem.kind
    return OpenAIError(problem.status, body["detail"], problem.field, code, problem.headers)


async def _tenant(request: Request) -> Any:
    try:
        return await run_in_threadpool(tenant, request)
    except Problem as problem:
        raise _from_problem(problem) from None


def _text(content: Any, where: str) -> str:
    """A message's ``content``: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise OpenAIError(400, f"{where}.content must be a string or a list of text parts", where)


def job_of(body: Any) -> tuple[str, str, dict[str, Any]]:
    """The route, the input text and the options of a chat completion request (400 naming the field)."""
    model = _model_of(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "'messages' must be a non-empty list", "messages")
    system: list[str] = []
    user: list[str] = []
    for k, message in enumerate(messages):
        where = f"messages[{k}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer") and not user:
            system.append(_text(message.get("content"), where))
        elif role == "user" and not user:
            user.append(_text(message.get("content"), where))
        else:
            raise OpenAIError(400, f"{where}: a chat here is system (or developer) messages, then one user message "
                                   f"(got role {role!r} there)", where)
    if not user:
        raise OpenAIError(400, "'messages' needs a user message", "messages")
    _one(body)
    _refuse_unknown(body, frozenset(_OPTIONS) | _IGNORED)
    options = {_OPTIONS[k]: v for k, v in body.items() if k in _OPTIONS and v is not None}
    if system:
        options["systemPrompt"] = "\n".join(system)
    try:
        ChatOptions.parse(options)  # refused here, as OpenAI would, not by the worker after a queue wait
    except InvalidInputError as exc:
        raise OpenAIError(400, str(exc)) from None
    return model, user[0], options


def _route(name: str, capability: MediaCapability, serves: str) -> Route:
    """The route a ``model`` names (a route's name or an alias the routes file declares), of ``capability``."""
    from ..worker.routes import get_routes

    try:
        route = get_routes().named(name)
    except RouteError as exc:
        raise OpenAIError(503, f"the routes file cannot be read: {exc}") from None
    if route is None:
        raise OpenAIError(404, f"The model {name!r} does not exist: models are the routes and aliases GET /v1/models "
                               "lists", "model", "model_not_found")
    if route.capability != capability:
        raise OpenAIError(400, f"model {name!r} (route {route.name!r}) serves {route.capability}, not {serves} "
                               f"({capability})", "model")
    return route


def _create(gw: Gateway, who: Any, model: str, job_input: Any, options: dict[str, Any],
            capability: MediaCapability = MediaCapability.TEXT_TO_TEXT, serves: str = "chat") -> JobRecord:
    """One job through the route ``model`` names, made as ``POST /v1/jobs`` makes one."""
    from .submit import create

    route = _route(model, capability, serves)
    try:
        gw.limit_rate(who)
        record, _ = create(gw, who, JobIn.model_validate({"input": job_input, "route": route.name, "options": options}))
    except Problem as problem:
        raise _from_problem(problem) from None
    return record


async def _follow(gw: Gateway, task_id: str) -> AsyncIterator[dict[str, Any]]:
    """The job's output entries' data as they come, until its final status (or its stored end)."""
    client = gw.streams()
    cursor = "0-0"
    while True:
        reply = await client.xread({stream_key(task_id): cursor}, count=100, block=BLOCK_MS)
        entries = cast(list[tuple[str, dict[str, str]]], reply[0][1] if reply else [])  # type: ignore[index]
        if not entries and await _stored_state(client, task_id) is not None:
            return
        for entry_id, fields in entries:
            cursor = entry_id
            data = json.loads(fields.get("data") or "{}")
            if fields.get("event") == OUTPUT:
                yield data
            elif fields.get("event") == STATUS and data.get("status") in FINAL:
                return


def _view(gw: Gateway, record: JobRecord, request: Request) -> dict[str, Any]:
    from .jobs import view

    return view(gw, record, request)


def _failure(out: dict[str, Any]) -> OpenAIError:
    error = out.get("error") or {}
    status = 400 if error.get("type") == "InvalidInputError" else 502
    return OpenAIError(status, f"the job {out['status']}: {error.get('type') or 'Error'}: {error.get('message', '')}",
                       code=f"job_{out['status']}")


def _finish(out: dict[str, Any]) -> tuple[str, str, dict[str, int]]:
    """The content, the finish reason and the usage of a finished job's result."""
    asset = (out.get("result") or {}).get("asset") or {}
    metadata = asset.get("metadata") or {}
    raw = metadata.get("usage") or {}
    usage = {k: int(raw.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return str(asset.get("content", "")), str(metadata.get("finish_reason") or "stop"), usage


def _cost_headers(record: JobRecord, out: dict[str, Any]) -> dict[str, str]:
    headers = {JOB_HEADER: record.id}
    if out.get("cost_usd") is not None:
        headers[COST_HEADER] = f"{out['cost_usd']:.10g}"
    return headers


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise OpenAIError(400, "the request body is not JSON") from None


def _model_of(body: Any) -> str:
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "'model' is required: a route or an alias (GET /v1/models lists them)", "model")
    return model


def _refuse_unknown(fields: Any, served: frozenset[str]) -> None:
    unknown = sorted(set(fields) - served)
    if unknown:
        raise OpenAIError(400, f"unsupported parameter {unknown[0]!r} (served here: {', '.join(sorted(served))})",
                          unknown[0])


def _one(body: dict[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise OpenAIError(400, "only n=1 is served", "n")


async def _finished(gw: Gateway, record: JobRecord, request: Request) -> dict[str, Any]:
    """The job once it has ended, as ``GET /v1/jobs/{id}`` shows it (its outputs granted to its tenant); a job
    that did not succeed raises its failure."""
    async for _ in _follow(gw, record.steps[-1]):
        pass
    out = await run_in_threadpool(_view, gw, record, request)
    if out["status"] != "succeeded":
        raise _failure(out)
    return out


def _output(out: dict[str, Any], kind: str, model: str) -> dict[str, Any]:
    """The job's output asset, which must be a stored ``kind`` (the route's capability promises one)."""
    asset = (out.get("result") or {}).get("asset") or {}
    if asset.get("type") != kind or not isinstance(asset.get("sha256"), str):
        raise OpenAIError(502, f"model {model!r} made a {asset.get('type') or 'nothing'}, not a stored {kind}",
                          code="unexpected_output")
    return cast(dict[str, Any], asset)


def _blob_bytes(gw: Gateway, sha256: str) -> bytes:
    return BlobStore(gw.settings.blobs).path_for(sha256).read_bytes()


@router.get("/v1/models", operation_id="listModels", summary="The routes and aliases, as OpenAI models")
async def list_models(request: Request) -> Response:
    """OpenAI's model list: one entry per route and per alias of the routes file (never a provider URL)."""
    try:
        await _tenant(request)
        from ..worker.routes import get_routes

        try:
            routes = await run_in_threadpool(get_routes)
        except RouteError as exc:
            raise OpenAIError(503, f"the routes file cannot be read: {exc}") from None
        try:
            created = int(routes.path.stat().st_mtime)
        except OSError:
            created = 0
        data = [{"id": name, "object": "model", "created": created, "owned_by": "mediaconduit",
                 "capability": str(route.capability), "route": route.name}
                for name in sorted([*routes.routes, *routes.aliases]) if (route := routes.named(name)) is not None]
        return JSONResponse({"object": "list", "data": data})
    except OpenAIError as exc:
        return exc.response()


@router.post("/v1/chat/completions", operation_id="createChatCompletion", summary="A chat completion, as a job")
async def chat_completions(request: Request) -> Response:
    """OpenAI's chat completion, streamed (``stream: true``) or not, with ``usage``; the job's id and cost in
    the ``X-MediaConduit-Job-Id`` and ``X-MediaConduit-Cost-USD`` headers."""
    gw = gateway_of(request)
    try:
        who = await _tenant(request)
        body = await _json_body(request)
        model, text, options = job_of(body)
        record = await run_in_threadpool(_create, gw, who, model, text, options)
        created = int(time.time())
        if body.get("stream"):
            usage_asked = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_stream(gw, record, request, model, created, usage_asked),
                                     media_type="text/event-stream", headers={JOB_HEADER: record.id,
                                                                              "Cache-Control": "no-cache"})
        out = await _finished(gw, record, request)
        content, finish, usage = _finish(out)
        return JSONResponse({
            "id": f"chatcmpl-{record.id}", "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage,
        }, headers=_cost_headers(record, out))
    except OpenAIError as exc:
        return exc.response()
    except redis.RedisError as exc:
        return OpenAIError(503, f"the gateway lost its Redis ({type(exc).__name__})").response()


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(gw: Gateway, record: JobRecord, request: Request, model: str, created: int,
                  usage_asked: bool) -> AsyncIterator[bytes]:
    """The job's chunks as ``chat.completion.chunk`` events, then the finish reason, the usage (when asked
    for) and ``[DONE]``; a job that fails or breaks ends with an ``error`` event."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({"id": f"chatcmpl-{record.id}", "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for data in _follow(gw, record.steps[-1]):
            if "error" in data:
                error = data["error"] or {}
                yield _sse(OpenAIError(502, f"the stream broke: {error.get('type')}: {error.get('message')}",
                                       code="stream_broken").body())
                return
            if data.get("chunk"):
                yield chunk({"content": data["chunk"]})
        out = await run_in_threadpool(_view, gw, record, request)
        if out["status"] != "succeeded":
            yield _sse(_failure(out).body())
            return
        _, finish, usage = _finish(out)
        yield chunk({}, finish)
        if usage_asked:
            yield _sse({"id": f"chatcmpl-{record.id}", "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"
    except redis.RedisError as exc:
        yield _sse(OpenAIError(503, f"the gateway lost its Redis ({type(exc).__name__})").body())


IMAGE_FIELDS = frozenset({"model", "prompt", "n", "response_format", "user"})
"""What ``POST /v1/images/generations`` takes; ``user`` is OpenAI's end-user tag, accepted and not used."""


@router.post("/v1/images/generations", operation_id="createImage", summary="An image from a prompt, as a job")
async def images_generations(request: Request) -> Response:
    """OpenAI's image generation on a text-to-image route: ``data: [{"b64_json"}]``, or ``[{"url"}]`` (the
    default) naming ``GET /v1/files/{sha256}``, which serves the image to this tenant's key."""
    gw = gateway_of(request)
    try:
        who = await _tenant(request)
        body = await _json_body(request)
        model = _model_of(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise OpenAIError(400, "'prompt' must be a non-empty string", "prompt")
        _one(body)
        form = body.get("response_format") or "url"
        if form not in ("url", "b64_json"):
            raise OpenAIError(400, f"'response_format' must be 'url' or 'b64_json', got {form!r}", "response_format")
        _refuse_unknown(body, IMAGE_FIELDS)
        record = await run_in_threadpool(_create, gw, who, model, prompt, {}, MediaCapability.TEXT_TO_IMAGE,
                                         "image generation")
        out = await _finished(gw, record, request)
        asset = _output(out, "image", model)
        if form == "b64_json":
            item = {"b64_json": base64.b64encode(await run_in_threadpool(_blob_bytes, gw, asset["sha256"])).decode()}
        else:
            item = {"url": f"{request.base_url}v1/files/{asset['sha256']}"}
        return JSONResponse({"created": int(time.time()), "data": [item]}, headers=_cost_headers(record, out))
    except OpenAIError as exc:
        return exc.response()
    except redis.RedisError as exc:
        return OpenAIError(503, f"the gateway lost its Redis ({type(exc).__name__})").response()


SPEECH_FIELDS = frozenset({"model", "input", "voice", "response_format", "user"})
"""What ``POST /v1/audio/speech`` takes."""
AUDIO_FORMATS = {"wav": ("audio/wav", "audio/x-wav", "audio/wave"), "mp3": ("audio/mpeg",), "flac": ("audio/flac",),
                 "opus": ("audio/ogg", "audio/opus"), "aac": ("audio/aac",), "pcm": ("audio/pcm", "audio/l16")}
"""OpenAI's ``response_format`` values of speech, and the media types that are each."""


@router.post("/v1/audio/speech", operation_id="createSpeech", summary="Speech from text, as a job",
             responses={200: {"content": {"audio/wav": {}}}})
async def audio_speech(request: Request) -> Response:
    """OpenAI's text to speech on a text-to-audio route: the audio's bytes, with the media type the model
    made. ``voice`` is the model's own voice option (espeak's ``en-us``, say); ``response_format``, when given,
    must be what the model makes: the gateway converts nothing."""
    gw = gateway_of(request)
    try:
        who = await _tenant(request)
        body = await _json_body(request)
        model = _model_of(body)
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise OpenAIError(400, "'input' must be a non-empty string", "input")
        voice = body.get("voice")
        if voice is not None and not isinstance(voice, str):
            raise OpenAIError(400, "'voice' must be a string: a voice of the route's model", "voice")
        form = body.get("response_format")
        if form is not None and form not in AUDIO_FORMATS:
            raise OpenAIError(400, f"'response_format' must be one of {', '.join(AUDIO_FORMATS)}, got {form!r}",
                              "response_format")
        _refuse_unknown(body, SPEECH_FIELDS)
        options = {"voice": voice} if voice else {}
        record = await run_in_threadpool(_create, gw, who, model, text, options, MediaCapability.TEXT_TO_AUDIO,
                                         "speech")
        out = await _finished(gw, record, request)
        asset = _output(out, "audio", model)
        mime = str(asset.get("mime_type") or "application/octet-stream")
        if form is not None and mime.lower() not in AUDIO_FORMATS[form]:
            raise OpenAIError(400, f"model {model!r} made {mime}, not {form}: the gateway converts no audio; leave "
                                   "'response_format' out, or ask for what the model makes", "response_format",
                              headers={JOB_HEADER: record.id})
        audio = await run_in_threadpool(_blob_bytes, gw, asset["sha256"])
        return Response(audio, media_type=mime, headers=_cost_headers(record, out))
    except OpenAIError as exc:
        return exc.response()
    except redis.RedisError as exc:
        return OpenAIError(503, f"the gateway lost its Redis ({type(exc).__name__})").response()


TRANSCRIPTION_FIELDS = frozenset({"file", "model", "language", "prompt", "response_format"})
"""What ``POST /v1/audio/transcriptions`` takes (multipart form fields)."""
FORM_FIELDS = 20
"""Most form fields read: more than are served, so an unserved one is refused by its name."""
UPLOAD_PATH = "/v1/audio/transcriptions"
"""The one OpenAI path whose body is an upload, capped as ``POST /v1/files`` is (``app.BodyCap``)."""


async def _upload(gw: Gateway, who: Any, part: UploadFile) -> dict[str, Any]:
    """The uploaded recording streamed into the blob store, served to its tenant, as the job's audio input."""
    from .files import grant

    cap = gw.settings.gateway_max_upload_bytes
    writer = await run_in_threadpool(BlobStore(gw.settings.blobs).writer, cap, "the upload")
    try:
        while chunk := await part.read(1 << 20):
            await run_in_threadpool(writer.write, chunk)
    except MediaLimitError:
        raise OpenAIError(413, f"'file' is over {cap:,} bytes (MEDIACONDUIT_GATEWAY_MAX_UPLOAD_BYTES)", "file") from None
    except BaseException as exc:
        writer.__exit__(type(exc), exc, None)
        raise
    await run_in_threadpool(writer.__exit__, None, None, None)
    mime = part.content_type or "application/octet-stream"
    await run_in_threadpool(grant, gw, who.name, writer.sha256, mime, writer.size)
    return {"type": "audio", "uri": writer.uri, "mime_type": mime}


@router.post(UPLOAD_PATH, operation_id="createTranscription", summary="Text from an uploaded recording, as a job")
async def audio_transcriptions(request: Request) -> Response:
    """OpenAI's transcription on an audio-to-text route: a multipart upload (``file``, ``model``, ``language``,
    ``prompt``: the model's ``initialPrompt``), answered ``{"text"}`` or, for ``response_format=text``, the
    text alone. The recording goes into the blob store, served to the tenant as its uploads are."""
    gw = gateway_of(request)
    try:
        who = await _tenant(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise OpenAIError(400, "the request body must be multipart/form-data with the recording in 'file'", "file")
        try:
            form = await request.form(max_files=1, max_fields=FORM_FIELDS)
        except HTTPException as exc:
            raise OpenAIError(400, f"the multipart body cannot be read: {exc.detail}") from None
        _refuse_unknown(form, TRANSCRIPTION_FIELDS)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        model = _model_of(fields)
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise OpenAIError(400, "'file' is required: the recording, as a file part", "file")
        form_kind = fields.get("response_format") or "json"
        if form_kind not in ("json", "text"):
            raise OpenAIError(400, f"'response_format' must be 'json' or 'text', got {form_kind!r}", "response_format")
        options = {"language": fields["language"]} if fields.get("language") else {}
        if fields.get("prompt"):
            options["initialPrompt"] = fields["prompt"]
        _route(model, MediaCapability.AUDIO_TO_TEXT, "transcription")  # before the upload is stored
        recording = await _upload(gw, who, part)
        record = await run_in_threadpool(_create, gw, who, model, recording, options, MediaCapability.AUDIO_TO_TEXT,
                                         "transcription")
        out = await _finished(gw, record, request)
        asset = (out.get("result") or {}).get("asset") or {}
        if asset.get("type") != "text":
            raise OpenAIError(502, f"model {model!r} made a {asset.get('type') or 'nothing'}, not text",
                              code="unexpected_output")
        text = str(asset.get("content", ""))
        headers = _cost_headers(record, out)
        if form_kind == "text":
            return PlainTextResponse(text, headers=headers)
        return JSONResponse({"text": text}, headers=headers)
    except OpenAIError as exc:
        return exc.response()
    except redis.RedisError as exc:
        return OpenAIError(503, f"the gateway lost its Redis ({type(exc).__name__})").response()


PATHS = frozenset(str(getattr(route, "path", "")) for route in router.routes)
"""The paths served here, whose errors are OpenAI's shape wherever they arise (``app.BodyCap`` too)."""
