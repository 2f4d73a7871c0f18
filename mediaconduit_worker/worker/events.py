"""A job's event stream: what happened to it, in order, in one bounded Redis stream per job.

The stream ``mediaconduit:events:<task id>`` holds entries ``{"event": <type>, "data": <JSON text>}``, capped
at about ``MEDIACONDUIT_EVENTS_MAXLEN`` entries (``XADD MAXLEN ~``: the oldest go first) and kept
``MEDIACONDUIT_EVENTS_TTL`` seconds after its last entry. An entry's stream id (``<ms>-<n>``, the Redis
server's clock) is its id and its time. Types:

- ``status``: ``{"status": "queued" | "running" | "succeeded" | "failed" | "canceled" | "expired", ...}``;
  a job's stream ends with one of the last four (``FINAL``);
- ``output`` and ``progress``: a streamed job's chunks and a media model's progress, written by the serving
  worker (``chunks.py``); ``log``: a model's log line, which no step writes yet (webhooks' ``logs``).

Status events are written for a job that carries ``headers.EVENTS_HEADER`` (every job the gateway sends),
where the job's state is: right after the result backend stores it
(``EventsBackend``, mixed in front of the app's backend, so a reader told ``succeeded`` finds the
result stored), whichever process stores it (the pool for STARTED, SUCCESS, FAILURE and RETRY; the
worker's main process for a hard time limit, a lost pool process, a job too large to run; anyone for a
cancel, ``revokes.store_revoked``, which writes the final event of any cancelled job). Errors are shown as
the stored ones are: scrubbed of the job's secrets and of secret shapes.

When the job has a webhook (the hash ``mediaconduit:webhook:<task id>``, written by the gateway) whose
``events`` filter admits the event, the same Lua call (``lua/events_add.lua``) adds
``{task_id, event, data, event_id}`` to the outbox stream ``mediaconduit:webhooks:outbox`` that the
gateway's dispatcher sends from. Webhook events: ``start`` (status running), ``output``, ``logs`` (a log
line) and ``completed`` (a final status).

A failure to write an event (Redis away past the client's retries) is logged and does not fail the job:
its state is in the result backend all the same.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import redis
from celery import states
from redis.commands.core import Script

from ..redaction import scrub, secret_values
from ..settings import get_settings
from .headers import EVENTS_HEADER
from .lua_scripts import named, register
from .redis_state import state_redis

log = logging.getLogger(__name__)

STREAM_PREFIX = "mediaconduit:events:"
WEBHOOK_PREFIX = "mediaconduit:webhook:"
OUTBOX = "mediaconduit:webhooks:outbox"
TRANSFORM_TASK = "mediaconduit.transform"  # app.TRANSFORM_TASK (app imports this module)

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
CANCELED, EXPIRED = "canceled", "expired"
FINAL = frozenset({SUCCEEDED, FAILED, CANCELED, EXPIRED})
"""The statuses that end a job's stream."""
STATUS, PROGRESS, LOG, OUTPUT = "status", "progress", "log", "output"
EVENT_TYPES = (STATUS, PROGRESS, LOG, OUTPUT)

#: The result backend's states a job's stream shows, as statuses (REVOKED: ``canceled`` or ``expired``).
_STATUS_OF_STATE = {states.STARTED: RUNNING, states.SUCCESS: SUCCEEDED, states.FAILURE: FAILED,
                    states.RETRY: QUEUED, states.REVOKED: CANCELED}


def stream_key(task_id: str) -> str:
    return STREAM_PREFIX + task_id


def webhook_event(event: str, data: dict[str, Any]) -> str | None:
    """The webhook event an entry is sent as, or None when webhooks are not told of it."""
    if event == STATUS:
        status = data.get("status")
        return "start" if status == RUNNING else "completed" if status in FINAL else None
    return {OUTPUT: "output", LOG: "logs"}.get(event)


@functools.cache
def _script(client: redis.Redis) -> Script:
    return register(client, "events_add")


def add(task_id: str, event: str, data: dict[str, Any], client: redis.Redis | None = None) -> str | None:
    """Append one event to the job's stream (and to the webhook outbox when the job's webhook wants it);
    its stream id, or None when event streams are off (``MEDIACONDUIT_EVENTS_MAXLEN=0``)."""
    if event not in EVENT_TYPES:
        raise ValueError(f"event type must be one of {', '.join(EVENT_TYPES)}, got {event!r}")
    settings = get_settings()
    if settings.events_maxlen <= 0:
        return None
    client = client or state_redis()
    args = named(task_id=task_id, event=event, data=json.dumps(data, separators=(",", ":")),
                 maxlen=settings.events_maxlen, ttl=max(1, settings.events_ttl), hook=webhook_event(event, data) or "")
    return str(_script(client)(keys=[STREAM_PREFIX + task_id, WEBHOOK_PREFIX + task_id, OUTBOX], args=[args],
                               client=client))


def status(task_id: str, value: str, **fields: Any) -> str | None:
    """A ``status`` event, logged (not raised) when it cannot be written: the job's state is stored anyway."""
    try:
        return add(task_id, STATUS, {"status": value, **fields})
    except redis.RedisError as exc:
        log.warning("job %s: its %r event was not written (%s)", task_id, value, exc)
        return None


# -- status events from the stored states ----------------------------------------------------------------
def _secrets_of(request: Any) -> list[str]:
    """The secret values of a job's provider URL and options (the message's arguments as sent)."""
    args = list(getattr(request, "args", None) or ())
    kwargs = getattr(request, "kwargs", None) or {}
    provider = args[1] if len(args) > 1 else kwargs.get("provider")
    options = args[3] if len(args) > 3 else kwargs.get("options")
    try:
        return secret_values([provider, options])
    except (RecursionError, TypeError, ValueError):
        return []


def error_of(exc: Any, request: Any = None) -> dict[str, str]:
    """An error as a status event shows it: its type and message, scrubbed of the job's secrets."""
    message = str(exc) if isinstance(exc, BaseException) else str(exc or "")
    return {"type": type(exc).__name__ if isinstance(exc, BaseException) else "Error",
            "message": scrub(message, _secrets_of(request))}


def revoked(task_id: str, entry: dict[str, Any]) -> str | None:
    """The final event of a job that was cancelled or expired (``revokes``' entry: state, at, reason)."""
    return status(task_id, EXPIRED if entry.get("state") == "EXPIRED" else CANCELED,
                  reason=scrub(str(entry.get("reason", "")), ()))


def has_reader(request: Any) -> bool:
    """Whether a job's stream is read (it carries ``EVENTS_HEADER``): streams are written only for those."""
    return bool(getattr(request, EVENTS_HEADER, None))


def stored(task_id: str, result: Any, state: str, request: Any) -> None:
    """The status event for a transform's state just stored in the result backend, when the job's stream has a
    reader."""
    value = _STATUS_OF_STATE.get(state)
    if value is None or not has_reader(request) or getattr(request, "task", None) != TRANSFORM_TASK:
        return
    if value == RUNNING:
        status(task_id, RUNNING, attempt=getattr(request, "retries", 0) or 0)
    elif value == SUCCEEDED:
        status(task_id, SUCCEEDED)
    elif value == FAILED:
        status(task_id, FAILED, error=error_of(result, request))
    elif value == QUEUED:
        status(task_id, QUEUED, retry=(getattr(request, "retries", 0) or 0) + 1, reason=error_of(result, request))
    else:  # REVOKED by Celery itself (its own revoke or expires): the reason is in the exception
        status(task_id, EXPIRED if "expired" in str(result) else CANCELED, reason=error_of(result, request)["message"])


class EventsBackend:
    """Mixed in front of the app's result backend: each state of a transform stored, then its event (so a
    reader that sees an event finds that state stored)."""

    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None,
                     **kwargs: Any) -> Any:
        done = super().store_result(task_id, result, state, traceback, request, **kwargs)  # type: ignore[misc]
        stored(task_id, result, state, request)
        return done


@functools.cache
def reporting(backend_cls: type) -> type:
    """``backend_cls`` with ``EventsBackend`` in front of it."""
    return type(f"Reporting{backend_cls.__name__}", (EventsBackend, backend_cls), {"__module__": __name__})
