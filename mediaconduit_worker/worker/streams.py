"""Following a job's output as it is made, in Python: ``transform.stream_of(task_id)`` reads the chunks a
worker writes to the job's event stream (``chunks.py``, ``events.py``); ``transform.stream(...)`` sends a job
marked as read and follows it the same way. Both call ``follow`` with the task's app, whose result backend
holds a failed job's error (passed in: the app's module imports this one).

Each chunk carries its stream id: ``transform.stream_of(chunk.task_id, after=chunk.id)`` goes on after it, from
another process as well, for as long as the stream is kept (``MEDIACONDUIT_EVENTS_TTL``). The stream
ends with the job: when it succeeds the iteration stops (the whole result is the job's result, as
ever); when it fails, is cancelled or expires, the job's stored error is raised, as ``AsyncResult.get``
raises it; a stream that broke after its first chunk raises ``StreamBrokenError`` at its ``error`` entry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from celery import Celery

from ..errors import StreamBrokenError
from . import events
from .redis_state import waiting_redis

BLOCK_MS = 1000
"""Longest single wait for the next entry, so a timeout is noticed."""


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One chunk of a job's output: a text delta, or (``text`` empty) a ``progress`` report."""

    task_id: str
    id: str
    """The entry's stream id: ``transform.stream_of(task_id, after=id)`` resumes after this chunk."""
    text: str
    progress: dict[str, Any] | None = None


def follow(app: Celery, task_id: str, after: str = "0-0", timeout: float | None = None) -> Iterator[StreamChunk]:
    """The chunks of job ``task_id`` after stream id ``after``, as they are written, until the job ends; a
    failed job's error is read from ``app``'s result backend.

    ``timeout``: seconds without the job ending before ``TimeoutError`` (None: no limit). A job sent without
    ``headers.EVENTS_HEADER`` has no stream to follow: use ``transform.stream``, or send it with that header.
    """
    client = waiting_redis()
    key = events.stream_key(task_id)
    until = None if timeout is None else time.monotonic() + timeout
    last = after
    while True:
        block = BLOCK_MS if until is None else max(1, min(BLOCK_MS, int((until - time.monotonic()) * 1000)))
        replies: list[tuple[str, list[tuple[str, dict[str, str]]]]] = client.xread(  # type: ignore[assignment]
            {key: last}, count=500, block=block)
        for _, entries in replies or ():
            for entry_id, fields in entries:
                last = entry_id
                chunk = _chunk(task_id, entry_id, fields)
                if chunk is not None:
                    yield chunk
                elif _ended(app, task_id, fields):
                    return
        if until is not None and time.monotonic() >= until:
            raise TimeoutError(f"job {task_id} did not end within {timeout:g}s (last entry read: {last})")


def _chunk(task_id: str, entry_id: str, fields: dict[str, str]) -> StreamChunk | None:
    event = fields.get("event")
    if event not in (events.OUTPUT, events.PROGRESS):
        return None
    data = json.loads(fields.get("data") or "{}")
    if event == events.PROGRESS:
        return StreamChunk(task_id, entry_id, "", data)
    if "error" in data:
        error = data["error"] or {}
        raise StreamBrokenError(f"job {task_id}: its output stream broke after entry {entry_id}: "
                                f"{error.get('type', 'Error')}: {error.get('message', '')}")
    return StreamChunk(task_id, entry_id, str(data.get("chunk", "")))


def _ended(app: Celery, task_id: str, fields: dict[str, str]) -> bool:
    """Whether a status entry ends the job (a failed, cancelled or expired one raises the job's error)."""
    if fields.get("event") != events.STATUS:
        return False
    status = json.loads(fields.get("data") or "{}").get("status")
    if status not in events.FINAL:
        return False
    if status != events.SUCCEEDED:
        app.AsyncResult(task_id).get(timeout=10)  # raises the stored error, as a caller of .get() sees it
        raise RuntimeError(f"job {task_id} ended {status}, and its result backend holds no error")
    return True
