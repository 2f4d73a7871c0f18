"""What the worker lets out of a job's arguments: redacted copies, in every stored state and event.

Celery writes a job's arguments to the result backend (``result_extended``) from several places: the
pool process (STARTED with ``task_track_started``, RETRY, FAILURE, SUCCESS) and the worker's main
process (REVOKED, a hard time limit, a lost pool process). Rather than chase each path, the app's
result backend redacts the request it is handed in ``store_result``, the one call they all go through;
the task itself still receives the real arguments. Events and log lines show ``argsrepr``, which the
producer and the worker's request class both build from redacted arguments, and every log line
passes ``RedactingFilter``.
"""

from __future__ import annotations

import copy
import functools
import logging
from contextvars import ContextVar
from typing import Any

from celery.backends.base import BaseBackend
from celery.utils.saferepr import saferepr

from ..record import redact, scrub

#: Shown instead of arguments that cannot be walked (nested past the recursion limit, not a list or
#: an object as a message from elsewhere may have them): fail closed.
UNSHOWABLE = "[arguments not shown: they cannot be redacted]"


def redacted_args(args: Any) -> list[Any]:
    try:
        return redact(list(args or []))
    except (RecursionError, TypeError, ValueError):
        return [UNSHOWABLE]


def redacted_kwargs(kwargs: Any) -> dict[str, Any]:
    try:
        return redact(dict(kwargs or {}))
    except (RecursionError, TypeError, ValueError):
        return {"arguments": UNSHOWABLE}


def argsrepr(args: Any) -> str:
    return saferepr(redacted_args(args))


def kwargsrepr(kwargs: Any) -> str:
    return saferepr(redacted_kwargs(kwargs))


def redacted_request(request: Any) -> Any:
    """A shallow copy of a task request (a Celery ``Context``) with its arguments redacted."""
    if request is None or not (getattr(request, "args", None) or getattr(request, "kwargs", None)):
        return request
    shown = copy.copy(request)
    shown.args, shown.kwargs = redacted_args(request.args), redacted_kwargs(request.kwargs)
    return shown


class RedactingBackend(BaseBackend):
    """Mixed in front of the configured result backend class (any URL scheme)."""

    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None,
                     **kwargs: Any) -> Any:
        return super().store_result(task_id, result, state, traceback, redacted_request(request), **kwargs)


@functools.cache
def redacting(backend_cls: type) -> type:
    """``backend_cls`` with ``RedactingBackend`` in front of it."""
    return type(f"Redacting{backend_cls.__name__}", (RedactingBackend, backend_cls), {"__module__": __name__})


#: The secret values of the job this process is running (set by the task): log lines never show them.
current_secrets: ContextVar[tuple[str, ...]] = ContextVar("mediaconduit_job_secrets", default=())


class RedactingFilter(logging.Filter):
    """On the worker's log handlers: every line, traceback included, with secret shapes and the running
    job's secret values scrubbed (provider code and libraries log what they like)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = current_secrets.get()
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: the handler reports it as logging always does
            return True
        clean = scrub(message, secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets)
        return True


LOG_FILTER = RedactingFilter()
