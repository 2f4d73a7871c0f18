"""Commands that wait for workers: they first make sure some worker serves the queues, and never leave a
Celery result to be released while the interpreter shuts down."""

from __future__ import annotations

from typing import Any

from .output import CommandError, error_line


def require_workers(queues: list[str]) -> None:
    """Fail before anything is sent when no live worker consumes one of ``queues``, naming the command that
    starts one (every ``mediaconduit worker`` also serves the default queue)."""
    from ..worker.app import DEFAULT_QUEUE, app
    from ..worker.status import unserved_queues

    missing = unserved_queues(app, list(dict.fromkeys(queues)))
    if not missing:
        return
    caps = [q for q in missing if q != DEFAULT_QUEUE] or ["text-to-text"]
    start = "mediaconduit worker " + " ".join(f"--capability {c}" for c in caps)
    named = ", ".join(repr(q) for q in missing)
    raise CommandError(f"no worker serves queue {named}; start one with `{start}` (nothing was sent)")


def wait_result(job: Any, timeout: float) -> Any:
    """``job.get(timeout=…)``, its pending-result subscription released here: left to ``AsyncResult.__del__``
    at interpreter exit, it reconnects to Redis while imports are gone and prints ``Exception ignored``."""
    try:
        return job.get(timeout=timeout)
    finally:
        try:
            job.backend.remove_pending_result(job)
        except Exception:  # the backend is gone as well: nothing left to release
            pass


def job_failed(job: Any, exc: Exception) -> CommandError:
    """A job's own error, raised again here by Celery, as one line that says it happened on a worker (whose
    environment, files and settings are not this command's)."""
    try:
        worker = job.worker  # stored with the result (result_extended)
    except Exception:
        worker = None
    where = f"on worker {worker}" if worker else "on a worker"
    return CommandError(f"job {job.id} failed {where}: {error_line(exc)}")
