"""Many jobs' states in a few round trips: batch progress must not cost one GET per job per poll."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from celery import Celery, states

FINAL = frozenset(states.READY_STATES)
RUNNING = frozenset({states.STARTED, states.RETRY})
_CHUNK = 1000


@dataclass(frozen=True)
class JobState:
    """What the result backend knows about one task id (PENDING: queued, or never sent)."""

    id: str
    state: str
    result: Any = None

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def error(self) -> str | None:
        """The failure as one line, ``Type: message``."""
        if self.state not in states.EXCEPTION_STATES:
            return None
        exc = self.result
        if isinstance(exc, BaseException):
            return f"{type(exc).__name__}: {exc}"
        if isinstance(exc, dict) and "exc_type" in exc:
            return f"{exc['exc_type']}: {exc.get('exc_message')}"
        return str(exc)


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def fetch_states(app: Celery, ids: Iterable[str], retry_for: float = 60.0) -> dict[str, JobState]:
    """States of ``ids`` via the backend's MGET (any key-value backend), riding out a short outage."""
    backend = app.backend
    ids = list(ids)
    out: dict[str, JobState] = {}
    deadline = time.monotonic() + retry_for
    for chunk in _chunks(ids):
        keys = [backend.get_key_for_task(i) for i in chunk]
        while True:
            try:
                values = backend.mget(keys)
                break
            except (*getattr(backend, "connection_errors", ()), OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for task_id, raw in zip(chunk, values):
            if raw is None:
                out[task_id] = JobState(task_id, states.PENDING)
                continue
            meta = backend.decode_result(raw)
            out[task_id] = JobState(task_id, meta["status"], meta.get("result"))
    return out


@dataclass(frozen=True)
class Outcome:
    """Where one job (a single transform, or a chain of them) stands, from its steps' states."""

    status: str
    """``done`` | ``failed`` | ``running`` | ``queued``."""
    result: Any = None
    error: str | None = None
    step: int | None = None
    """For a failure: the index of the step that failed."""

    @property
    def final(self) -> bool:
        return self.status in ("done", "failed")


def outcome(step_ids: list[str], known: dict[str, JobState]) -> Outcome:
    """Done when the last step succeeded, failed when any step failed (a chain stops there)."""
    steps = [known.get(i) or JobState(i, states.PENDING) for i in step_ids]
    if steps[-1].state == states.SUCCESS:
        return Outcome("done", result=steps[-1].result)
    for k, st in enumerate(steps):
        if st.state in states.PROPAGATE_STATES:  # FAILURE, REVOKED (RETRY is still running)
            return Outcome("failed", error=st.error, step=k)
    if any(st.state in RUNNING for st in steps):
        return Outcome("running")
    return Outcome("queued")
