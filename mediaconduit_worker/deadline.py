"""The running job's deadline: how long a blocking call may still take.

The worker sets it when a job's provider code runs, from the job's hard time limit
(``MEDIACONDUIT_TASK_TIME_LIMIT`` where it runs, or ``time_limit=`` on the call). ``HttpClient`` cuts
every request's timeout to what is left of it; long provider calls (ffmpeg, prediction polling) read
``time_left()`` to end, or cancel paid remote work, in time. In a thread or gevent pool nothing kills a
process when a job overruns, so this is what makes a hung API call end on time, with an error naming
the provider and model. It is a context variable, so each pool thread or greenlet sees its own job's
deadline. The SDK only reads it (no Celery here).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import TimeLimitError


@dataclass
class Deadline:
    """When the running job must end (``time.monotonic()``), the limit it was given, and whose job it is."""

    at: float
    limit: float
    what: str

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def error(self, during: str | None = None) -> TimeLimitError:
        return TimeLimitError(f"{self.what} exceeded the job's time limit of {self.limit:g}s"
                              + (f" (during {during})" if during else ""))


_current: ContextVar[Deadline | None] = ContextVar("mediaconduit_deadline", default=None)


def current_deadline() -> Deadline | None:
    return _current.get()


def time_left(default: float | None = None) -> float | None:
    """Seconds left before the current job's deadline (never below 0); ``default`` outside a job."""
    d = _current.get()
    return default if d is None else max(d.remaining(), 0.0)


def cut(timeout: float, during: str) -> tuple[float, bool]:
    """``timeout`` cut to the job's time left, and whether the deadline is what bounds it now;
    a ``TimeLimitError`` when no time is left."""
    d = _current.get()
    if d is None:
        return timeout, False
    left = d.remaining()
    if left <= 0:
        raise d.error(during)
    return (left, True) if left < timeout else (timeout, False)


class use(AbstractContextManager[Deadline]):
    """Run the block under deadline ``d`` (the worker installs each job's around its provider calls). A
    class, not a generator: every job enters one, and a generator context manager costs four calls more."""

    def __init__(self, d: Deadline) -> None:
        self.deadline = d

    def __enter__(self) -> Deadline:
        self._token = _current.set(self.deadline)
        return self.deadline

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


@contextmanager
def lifted() -> Iterator[None]:
    """Run the block without the job's deadline: cleanup that must still happen once it has passed
    (cancelling paid remote work), in the moment the worker keeps back before its hard limit."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def deadline(seconds: float, what: str) -> AbstractContextManager[Deadline]:
    """Run the block with a deadline ``seconds`` from now; ``what`` names the job in errors."""
    return use(Deadline(time.monotonic() + seconds, seconds, what))
