"""``GET /v1/jobs/{id}/events``: a job's event stream (``worker/events.py``) as server-sent events.

Each event is one entry of a step's Redis stream, in order, step after step: ``event:`` its type, ``data:``
its JSON, ``id:`` its stream id (``<ms>-<n>``) for a job of one step, ``<step>:<ms>-<n>`` (``step`` from 0)
for a chain, since two steps' streams may hold the same id. ``Last-Event-ID`` resumes right after that
event, with none lost or repeated. The stream ends after the job's last final status: the last step's, or
the first step's that is not ``succeeded``. Resumed after that, the answer is 204, which tells an
``EventSource`` to stop reconnecting.

A stream waits in ``XREAD BLOCK`` on the gateway's asyncio Redis client: no thread and no polling; an
idle one costs one pooled Redis connection and a few coroutines, and its wait ends each
``MEDIACONDUIT_GATEWAY_EVENTS_KEEPALIVE`` seconds with a keep-alive comment. A client that goes away
cancels its wait at once (its connection is closed and leaves the pool). All state is in Redis, so a
client may resume on any gateway.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import redis
from fastapi import APIRouter, Depends, Header, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..worker.events import FINAL, STATUS, SUCCEEDED, stream_key
from .auth import tenant
from .context import gateway_of
from .problems import MEDIA_TYPE, Problem, invalid, not_found
from .records import JobRecord, job_key
from .tenants import Tenant

log = logging.getLogger(__name__)
router = APIRouter(tags=["jobs"])
BATCH = 100
"""Most entries one ``XREAD`` hands back."""
EVENT_ID = re.compile(r"(?:(\d{1,4}):)?(\d{1,20}-\d{1,20})")
#: The stored states after which a step writes no more events (Celery's READY_STATES).
_OVER = frozenset({"SUCCESS", "FAILURE", "REVOKED"})

_EXAMPLE = ('id: 1733318400123-0\nevent: status\ndata: {"status":"running","attempt":0}\n\n: keep-alive\n\n'
            'id: 1733318401456-0\nevent: status\ndata: {"status":"succeeded"}\n\n')


def event_id(record: JobRecord, step: int, entry_id: str) -> str:
    """The SSE id of a step's stream entry: the entry's id, prefixed with its step in a chain."""
    return entry_id if len(record.steps) == 1 else f"{step}:{entry_id}"


def resume_point(value: str | None, steps: int) -> tuple[int, str]:
    """The step and stream id a ``Last-Event-ID`` names (``(0, "0-0")``: from the start); 400 when it
    cannot be one of the job's ids."""
    if value is None:
        return 0, "0-0"
    form = "<ms>-<n>" if steps == 1 else "<step>:<ms>-<n>"
    found = EVENT_ID.fullmatch(value.strip())
    if found is None or (steps > 1 and found[1] is None):
        raise invalid("Last-Event-ID", value, f"Last-Event-ID must be an id this job's events carry ({form})", status=400)
    step = int(found[1] or 0)
    if step >= steps:
        raise invalid("Last-Event-ID", value, f"Last-Event-ID names step {step}; this job has {steps} step(s)",
                      status=400)
    return step, found[2]


def _final(fields: dict[str, str]) -> str | None:
    """The final status an entry reports, or None."""
    if fields.get("event") != STATUS:
        return None
    try:
        status = json.loads(fields.get("data") or "{}").get("status")
    except (ValueError, AttributeError):
        return None
    return status if status in FINAL else None


def _next_step(record: JobRecord, step: int, status: str) -> int | None:
    """The step to read after ``step`` ended with ``status`` (None: the job's stream is over)."""
    return step + 1 if status == SUCCEEDED and step + 1 < len(record.steps) else None


async def _stored_state(client: Any, task_id: str) -> str | None:
    """A step's state in the result backend once it has ended (SUCCESS, FAILURE, REVOKED), else None."""
    from ..worker.app import app

    raw = await client.get(app.backend.get_key_for_task(task_id))
    try:
        state = json.loads(raw).get("status") if raw else None
    except (ValueError, AttributeError):
        return None
    return state if state in _OVER else None


async def _events(client: Any, record: JobRecord, step: int, cursor: str, keepalive: float) -> AsyncIterator[ServerSentEvent]:
    """The job's events from ``cursor`` of ``step`` on, until its stream is over.

    A step whose state is stored as ended while a whole keep-alive wait brought none of its final event
    (its stream expired, was trimmed past it, or a write was lost) is taken as ended by its stored state."""
    block = max(1, int(keepalive * 1000))
    ended_unseen = False
    try:
        while True:
            task_id = record.steps[step]
            reply = await client.xread({stream_key(task_id): cursor}, count=BATCH, block=block)
            entries = reply[0][1] if reply else []
            if not entries:
                yield ServerSentEvent(comment="keep-alive")
                state = await _stored_state(client, task_id)
                if state is None or not ended_unseen:
                    ended_unseen = state is not None
                    continue
                following = _next_step(record, step, SUCCEEDED if state == "SUCCESS" else "failed")
                if following is None:
                    return
                step, cursor, ended_unseen = following, "0-0", False
                continue
            ended_unseen = False
            for entry_id, fields in entries:
                cursor = entry_id
                yield ServerSentEvent(data=fields.get("data", "{}"), event=fields.get("event", "message"),
                                      id=event_id(record, step, entry_id))
                status = _final(fields)
                if status is not None:
                    following = _next_step(record, step, status)
                    if following is None:
                        return
                    step, cursor = following, "0-0"
                    break
    except redis.RedisError as exc:  # Redis away past the client's retries: said as an event, the stream ends
        log.warning("job %s: its event stream stopped: %s", record.id, exc)
        problem = Problem(503, "events-unavailable", "Events unavailable",
                          f"the gateway lost its Redis ({type(exc).__name__}); reconnect with Last-Event-ID")
        yield ServerSentEvent(data=json.dumps(problem.body()), event="error")


@router.get("/v1/jobs/{job_id}/events", operation_id="getJobEvents", summary="Follow a job's events (server-sent events)",
            response_class=EventSourceResponse,
            responses={200: {"description": "Server-sent events: `id` (`<ms>-<n>`; `<step>:<ms>-<n>` in a chain), "
                                            "`event` (status, progress, log, output; error if the gateway lost Redis) "
                                            "and `data` (JSON), a `: keep-alive` comment on an idle stream. It ends "
                                            "after the job's final status.",
                             "content": {"text/event-stream": {"schema": {"type": "string"}, "example": _EXAMPLE}}},
                       204: {"description": "Resumed after the job's final event: nothing more will come"},
                       400: {"description": "A Last-Event-ID that is not one of this job's ids", "content": {MEDIA_TYPE: {}}},
                       404: {"description": "No such job for this key", "content": {MEDIA_TYPE: {}}},
                       503: {"description": "The gateway serves MEDIACONDUIT_GATEWAY_EVENTS_MAX_STREAMS streams already",
                             "content": {MEDIA_TYPE: {}}}})
async def job_events(job_id: str, request: Request, who: Tenant = Depends(tenant),
                     last_event_id: str | None = Header(None, alias="Last-Event-ID",
                                                        description="The id of the last event received: resume after it.")
                     ) -> Response:
    return await follow(request, who, job_id, last_event_id)


async def follow(request: Request, who: Tenant, job_id: str, last_event_id: str | None) -> Response:
    """The job's events for ``who`` (another tenant's job: 404), resumed after ``last_event_id``: the API's
    stream, and the job page's (``pages.py``), which a browser session authenticates."""
    gw = gateway_of(request)
    client = gw.streams()
    try:
        data = cast(dict[str, str], await client.hgetall(job_key(job_id))) if len(job_id) <= 64 else {}
    except redis.MaxConnectionsError:
        raise Problem(503, "too-many-streams", "Too many event streams",
                      f"this gateway serves {gw.settings.gateway_events_max_streams} event streams at once "
                      "(MEDIACONDUIT_GATEWAY_EVENTS_MAX_STREAMS); try again", headers={"Retry-After": "5"}) from None
    record = JobRecord.from_hash(job_id, data)
    if record is None or record.tenant != who.name:
        raise not_found("job", job_id)
    step, cursor = resume_point(last_event_id, len(record.steps))
    if cursor != "0-0":  # resumed: the event it names may have ended its step, or the job
        named = await client.xrange(stream_key(record.steps[step]), cursor, cursor)
        status = _final(cast(dict[str, str], named[0][1])) if named else None
        if status is not None:
            following = _next_step(record, step, status)
            if following is None:
                return Response(status_code=204)
            step, cursor = following, "0-0"
    return EventSourceResponse(_events(client, record, step, cursor, gw.settings.gateway_events_keepalive), ping=0)
