"""The running job's deadline, so long calls (ffmpeg, prediction polling) end or cancel before the
worker's time limit kills them. The runtime sets it per job; the SDK only reads it (no Celery here)."""

from __future__ import annotations

import threading
import time

_local = threading.local()  # one job per thread (prefork child or threads pool)


def set_job_deadline(seconds: float | None) -> None:
    """Called by the runtime when a job starts (``None`` when it ends): ``seconds`` from now."""
    _local.at = None if seconds is None else time.monotonic() + seconds


def time_left(default: float | None = None) -> float | None:
    """Seconds left before the current job's deadline (never below 0); ``default`` outside a job."""
    at = getattr(_local, "at", None)
    if at is None:
        return default
    return max(at - time.monotonic(), 0.0)

