"""The HTTP gateway's ASGI app: ``create_app(settings)``. Each concern is its own module with its own
``APIRouter`` (jobs, files, ..., and the job pages, ``pages.py``); this module only assembles them, with auth, problem+json errors and
body caps, and starts the ``cancel_after`` sweep and the webhook dispatcher (``dispatcher.py``) with the
app. The app keeps no state of its own: everything is in Redis, so several gateways can serve behind one
load balancer. Nothing connects when the app is made; Redis is reached on the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..settings import Settings
from . import events, files, jobs, openai, pages, webhooks
from .context import Gateway
from .problems import Problem, install, response
from .tenants import KeyStore

log = logging.getLogger(__name__)
ROUTERS = (jobs.router, events.router, files.router, webhooks.router, openai.router)
"""Every router of the API, in the order the OpenAPI document lists them."""
DEADLINE_SWEEP = 1.0
"""Seconds between looks for jobs whose ``cancel_after`` passed."""



class BodyTooLarge(Exception):
    """A request body over its cap (the problem's detail names the cap and its setting)."""

    def __init__(self, cap: int, setting: str) -> None:
        super().__init__(f"the request body is over {cap:,} bytes ({setting})")
        self.cap, self.setting = cap, setting


class BodyCap:
    """Refuses a request body over its cap (``Content-Length`` at once, a chunked body as it arrives): uploads
    (``POST /v1/files``, a transcription's recording) have ``MEDIACONDUIT_GATEWAY_MAX_UPLOAD_BYTES``, everything
    else ``MEDIACONDUIT_GATEWAY_MAX_BODY_BYTES``."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["path"] in ("/v1/files", openai.UPLOAD_PATH)
        cap = self.settings.gateway_max_upload_bytes + 64 * 1024 if upload else self.settings.gateway_max_body_bytes
        setting = "MEDIACONDUIT_GATEWAY_MAX_UPLOAD_BYTES" if upload else "MEDIACONDUIT_GATEWAY_MAX_BODY_BYTES"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            await _too_large(BodyTooLarge(cap, setting), scope, send)
            return
        seen = 0
        over = False

        async def capped() -> Message:
            # Past the cap the app is told the body ended, and its answer is replaced by the 413 below: an
            # exception raised here would reach the app's body parser, which answers 400 for any.
            nonlocal seen, over
            if over:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def answer(message: Message) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await _too_large(BodyTooLarge(cap, setting), scope, send)

        await self.app(scope, capped, answer)


async def _too_large(exc: BodyTooLarge, scope: Scope, send: Send) -> None:
    """problem+json, or OpenAI's error shape on the OpenAI-compatible paths (an OpenAI client reads that)."""
    path = scope.get("path")
    if path in openai.PATHS:
        reply = openai.OpenAIError(413, str(exc), "file" if path == openai.UPLOAD_PATH else None).response()
    else:
        reply = response(Problem(413, "too-large", "Request body too large", str(exc), field="body", value=None), path)
    await reply(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def _sweep_deadlines(gw: Gateway, stop: threading.Event) -> None:
    """Cancel jobs whose ``cancel_after`` passed. Every gateway sweeps; ``ZREM`` gives each job to one."""
    from .records import JobRecord
    from .submit import DEADLINES

    while not stop.wait(DEADLINE_SWEEP):
        try:
            due = gw.redis.zrangebyscore(DEADLINES, "-inf", gw.redis.time()[0], start=0, num=100)
            for job_id in due:
                if gw.redis.zrem(DEADLINES, job_id):
                    record = JobRecord.load(gw.redis, job_id)
                    if record is not None:
                        jobs.cancel(record, "canceled at its deadline (cancel_after)")
        except Exception as exc:  # Redis away for a moment: the next sweep catches up
            log.warning("deadline sweep: %s", exc)


def create_app(settings: Settings) -> FastAPI:
    """The gateway for ``settings``; Redis is reached on the first request, not here."""
    from ..worker.metrics.multiproc import recording
    from ..worker.redis_state import state_redis
    from .dispatcher import run_in_thread

    state = state_redis(settings.effective_result_backend)
    gw = Gateway(settings, state, state_redis(settings.effective_broker_url), KeyStore(state))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        sweeper = threading.Thread(target=_sweep_deadlines, args=(gw, stop), name="deadline-sweep", daemon=True)
        sweeper.start()
        dispatcher = run_in_thread(settings, state) if settings.gateway_webhooks else None
        yield
        stop.set()
        sweeper.join(timeout=5)
        if gw.stream_client is not None:
            await gw.stream_client.aclose()
        if dispatcher is not None:
            dispatcher[1].set()
            await asyncio.to_thread(dispatcher[0].join, settings.webhook_timeout + 10)

    app = FastAPI(title="MediaConduit Worker HTTP API", version="1", lifespan=lifespan,
                  description="Jobs from any language: create, read, list and cancel transforms, follow their events, "
                              "upload and download files. Every call needs `Authorization: Bearer KEY`. Errors are RFC 9457 problem+json.")
    app.state.gateway = gw
    install(app)

    for router in ROUTERS:
        app.include_router(router)
    app.include_router(pages.router)  # the job pages (HTML), not in the OpenAPI document
    app.add_middleware(BodyCap, settings=settings)
    if recording():  # outermost: a body refused by its cap is counted too
        from .metrics import Measured

        app.add_middleware(Measured)
    return app
