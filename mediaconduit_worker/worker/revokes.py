"""Cancels that stick, and jobs that could not start in time.

Celery keeps revokes in each worker's memory only: a revoke broadcast while no worker listens is lost,
and a worker that restarts forgets it (celery #8888). Here a revoke is first written to Redis beside
the results (``mediaconduit:revoked:<id>``, kept as long as results), then broadcast. Every worker
reads that record in the job's request before the job goes to a pool process, so a cancelled job
never runs, whichever worker takes it and whenever. A job running when it is cancelled is interrupted
(``interrupt`` below, through the pool's deadline machinery).

A job that is not run ends REVOKED in the result backend, as Celery's own revokes do (so
``AsyncResult.get`` raises ``TaskRevokedError`` at once), and its meta says when and why under
``revoked``: ``{"state": "CANCELLED" | "EXPIRED", "at": ISO time, "reason": ...}``. EXPIRED is a job
whose ``expires`` (or ``start_by``, mapped to it at the producer) passed before it could start.
A job that never started never reached the provider call, so no budget was held or charged for it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from celery import signals, states
from celery.app.control import Control
from celery.exceptions import Ignore, Reject, TaskRevokedError
from celery.utils.functional import maybe_list
from celery.worker.control import control_command
from celery.worker.state import task_ready

from ..settings import get_settings
from . import events
from .redaction import redacted_request
from .redis_state import state_redis

log = logging.getLogger(__name__)
PREFIX = "mediaconduit:revoked:"
CANCELLED, EXPIRED = "CANCELLED", "EXPIRED"
#: The control command that interrupts running jobs (Celery's ``revoke`` only flags queued ones).
INTERRUPT_COMMAND = "mediaconduit_interrupt"
#: States in which nothing has run yet (or a retry waits): a cancel may store REVOKED over them at once.
_UNSTARTED = frozenset({states.PENDING, states.RECEIVED, states.RETRY, states.REJECTED})


def _now() -> str:
    return datetime.now(UTC).isoformat()


def record_revokes(task_ids: Iterable[str], reason: str, state: str = CANCELLED) -> dict[str, Any]:
    """Write the revoke of each job to Redis, kept as long as results are (``MEDIACONDUIT_RESULT_EXPIRES``)."""
    entry = {"state": state, "at": _now(), "reason": reason}
    ttl = max(1, get_settings().result_expires)
    with state_redis().pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.set(PREFIX + task_id, json.dumps(entry), ex=ttl)
        pipe.execute()
    return entry


def revoke_of(task_id: str) -> dict[str, Any] | None:
    """The job's stored revoke, or None."""
    raw = state_redis().get(PREFIX + task_id)
    return json.loads(raw) if raw else None


def store_revoked(backend: Any, task_id: str, entry: dict[str, Any], request: Any = None) -> None:
    """REVOKED in the result backend, with ``entry`` (when, why) in the meta, then the job's final event
    (``canceled`` or ``expired``); a stored SUCCESS or FAILURE stays. Written whole (Celery's
    ``mark_as_revoked`` has no place for the when and why)."""
    if backend.get_state(task_id) in states.READY_STATES:
        return
    exc = TaskRevokedError(f"{entry['state'].lower()} at {entry['at']}: {entry['reason']}")
    meta: dict[str, Any] = {"status": states.REVOKED, "result": backend.prepare_exception(exc), "traceback": None,
                            "children": [], "date_done": entry["at"], "task_id": task_id, "revoked": entry}
    shown = redacted_request(request)  # as Celery's extended meta shows a job, its arguments redacted
    for field, attr in (("name", "task"), ("args", "args"), ("kwargs", "kwargs"), ("worker", "hostname"),
                        ("retries", "retries"), ("parent_id", "parent_id")):
        value = getattr(shown, attr, None)
        if value is not None:
            meta[field] = value
    backend.set(backend.get_key_for_task(task_id), backend.encode(meta))
    events.revoked(task_id, entry)


def later_steps(request_dict: Any) -> list[str]:
    """Ids of the chain steps that follow a job (Celery carries them in the message, last step first)."""
    chain = (request_dict or {}).get("chain") or []
    return [step["options"]["task_id"] for step in chain
            if isinstance(step, dict) and isinstance(step.get("options"), dict) and step["options"].get("task_id")]


def revoke_later_steps(backend: Any, request_dict: Any, of: str) -> None:
    """A chain whose step was cancelled or expired: its later steps are cancelled too (they would never be
    sent, and their results would stay PENDING forever)."""
    steps = later_steps(request_dict)
    if steps:
        entry = record_revokes(steps, f"an earlier step of its chain ({of}) did not run")
        for step in steps:
            store_revoked(backend, step, entry)


def why_not_run(request: Any) -> dict[str, Any] | None:
    """In the worker's main process, before a job goes to a pool: its stored revoke, or an EXPIRED entry
    when its ``expires`` has passed; None to run it. A Redis that cannot answer lets the job run (its
    queue is in that Redis too, so this is a moment's blip) and says so."""
    expires = request.expires
    if expires is not None and datetime.now(expires.tzinfo or None) > expires:
        return {"state": EXPIRED, "at": _now(), "reason": f"not started by {expires.isoformat()} (its expires/start_by)"}
    try:
        return revoke_of(request.id)
    except Exception as exc:  # any backend error: run rather than drop
        log.warning("job %s: could not read its revoke record (%s); running it", request.id, exc)
        return None


def interrupted(task: Any) -> Exception:
    """What a transform raises once ``JobInterrupted`` stopped its provider call: cancelled (its revoke is
    stored), it ends REVOKED with its later chain steps and its message is acknowledged (``Ignore``);
    otherwise its worker is shutting down and the message goes back to the queue at once (``Reject``)."""
    request, backend = task.request, task.backend
    entry = revoke_of(request.id)
    if entry is None:
        log.warning("job %s handed back to the queue: its worker is shutting down", request.id)
        if events.has_reader(request):
            events.status(request.id, events.QUEUED, reason="handed back: its worker is shutting down")
        return Reject("handed back at shutdown", requeue=True)
    store_revoked(backend, request.id, entry, request)
    revoke_later_steps(backend, {"chain": request.chain}, request.id)
    log.info("job %s cancelled while running: %s", request.id, entry["reason"])
    return Ignore()


def end_unrun(request: Any, context: Any, entry: dict[str, Any]) -> None:
    """In the worker's main process, for a job that will not run (Celery's ``Request`` and its task context):
    REVOKED with ``entry``, later chain steps too, the event stream told, the message acknowledged."""
    expired = entry["state"] == EXPIRED
    backend = request.task.backend
    task_ready(request)
    store_revoked(backend, request.id, entry, context)
    revoke_later_steps(backend, {"chain": getattr(context, "chain", None)}, request.id)  # the chain is the body's
    request.send_event("task-revoked", terminated=False, signum=None, expired=expired)
    signals.task_revoked.send(sender=request.task, request=context, terminated=False, signum=None, expired=expired)
    log.info("Task %s[%s] not run, %s: %s", request.name, request.id, entry["state"].lower(), entry["reason"])
    request.acknowledge()


class PersistentControl(Control):
    """``app.control`` whose ``revoke`` (``AsyncResult.revoke()``, ``mediaconduit cancel``) sticks: the revoke
    is stored in Redis, a job not started yet is REVOKED in the backend at once, and then workers are told
    (Celery's ``revoke`` for jobs they hold, ours to interrupt the ones they run).

    ``terminate`` and ``signal`` are not passed on: a running transform is always interrupted, through
    its pool's deadline machinery, which Celery's terminate lacks in a thread pool."""

    def revoke(self, task_id: Any, destination: Any = None, terminate: bool = False, signal: str = "SIGTERM",
               reason: str = "revoked", **kwargs: Any) -> Any:
        task_ids = [str(t) for t in maybe_list(task_id) or []]
        backend = self.app.backend
        entry = record_revokes(task_ids, reason)
        for one in task_ids:
            if backend.get_state(one) in _UNSTARTED:
                store_revoked(backend, one, entry)
        self.broadcast(INTERRUPT_COMMAND, destination=destination, arguments={"task_ids": task_ids})
        return super().revoke(task_ids, destination=destination, **kwargs)


@control_command(args=[("task_ids", list)], signature="<task_id> [task_id ...]")
def mediaconduit_interrupt(state: Any, task_ids: list[str], **_: Any) -> dict[str, Any]:
    """On each worker: interrupt the named jobs it is running; the job itself then reads why."""
    from celery.worker.state import active_requests

    from .deadlines import interrupt_job

    wanted = set(maybe_list(task_ids) or [])
    hit = [r for r in list(active_requests) if r.id in wanted]
    for request in hit:
        interrupt_job(request, state.consumer.pool)
    return {"ok": f"interrupted {len(hit)}"}
