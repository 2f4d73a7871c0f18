"""Waiting on a remote job (a Replicate prediction, a fal queue request) within the job's deadline.

Paid remote work must not outlive the job that asked for it: when the deadline comes, or the job is
interrupted (Celery's soft time limit, a revocation), the remote job is cancelled before the error
propagates. The interval grows from ``first`` to ``longest`` and never sleeps past the deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from .deadline import lifted, time_left
from .errors import ProviderExecutionError, TimeLimitError

log = logging.getLogger(__name__)
T = TypeVar("T")


def poll_until(check: Callable[[], T | None], cancel: Callable[[], None], *, what: str, budget: float,
               first: float = 0.5, longest: float = 5.0) -> T:
    """``check()`` until it returns a value. ``budget`` is the wait outside a job (no deadline set)."""
    started = time.monotonic()
    left = time_left(default=budget) or 0.0
    until = started + left
    interval = first
    try:
        while True:
            try:
                result = check()
            except TimeLimitError:  # the deadline came during the check (HttpClient refuses to wait past it)
                result = None
            if result is not None:
                return result
            now = time.monotonic()
            if now >= until or time_left(default=1.0) == 0.0:
                with lifted():  # cancelling uses the moment the worker keeps back before its hard limit
                    cancel()
                raise ProviderExecutionError(
                    f"{what}: not finished when the job's deadline came ({now - started:.1f}s); cancelled it")
            time.sleep(min(interval, max(until - now, 0.0)))
            interval = min(interval * 1.5, longest)
    except ProviderExecutionError:
        raise
    except BaseException:
        # Interrupted (soft time limit, revocation, shutdown) or a failed poll: stop the paid work first.
        try:
            with lifted():
                cancel()
        except Exception as exc:
            log.warning("%s: cancelling after an interruption failed: %s", what, exc)
        raise
