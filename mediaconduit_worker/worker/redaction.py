"""What the worker lets out of a job's arguments: redacted copies, in every stored state and event.

Celery writes a job's arguments to the result backend (``result_extended``) from several places: the
pool process (STARTED with ``task_track_started``, RETRY, FAILURE, SUCCESS) and the worker's main
process (REVOKED, a hard time limit, a lost pool process). Rather than chase each path, the app's
result backend redacts the request it is handed in ``store_result``, the one call they all go through;
the task itself still receives the real arguments. Events and log lines show ``argsrepr``, which the
producer and the worker's request class both build from redacted arguments, and every log line
passes ``RedactingFilter``.

What events and logs show of arguments and results is ``shown``: JSON (which Flower's task page shows
as it came) with long strings and lists cut, at most ``SHOWN_MAX`` characters. Celery's ``saferepr``
walks a value token by token in Python, which on a transform's nested result record takes 0.2-0.5 ms per job (a fifth of an echo job's worker
time); ``shown`` cuts a copy and leaves the encoding to C, in tens of microseconds. Of a transform's result
record it shows what served and what came out (``_brief_record``); the replay record, the source and the ids
stay in the result backend, a click away in Flower.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from celery.app.backends import by_url
from celery.utils.saferepr import saferepr

from ..redaction import redact, scrub
from .internals import show_task_results_with

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


#: Characters of arguments or of a result shown in an event or a log line (Celery's own default).
SHOWN_MAX = 1024
#: Characters of one string and items of one list shown, so one long field does not hide the rest.
SHOWN_STRING = 200
SHOWN_ITEMS = 20
_SHOWN_DEPTH = 12
_SCALARS = frozenset({type(None), bool, int, float})


class _NotJSON(Exception):
    pass


#: Left out of what events and log lines show of a transform's result record: the long, per-job parts.
_UNSHOWN_METADATA = frozenset({"generation_prompt", "attempts", "task_id", "worker"})
#: What they show of its generation prompt: what served.
_SHOWN_PROMPT = ("route", "provider", "model_id", "capability")


def _brief_record(value: Any) -> dict[str, Any] | None:
    """What a transform's result record (``asset`` and ``metadata`` with a generation prompt) shows, cut
    as ``_cut`` cuts: the asset with only the ``cost`` of its own metadata, the generation prompt's route,
    provider, model and capability, and the result's metadata without ``_UNSHOWN_METADATA`` (candidate,
    time, cache). None for anything else."""
    if type(value) is not dict or len(value) != 2:
        return None
    asset, metadata = value.get("asset"), value.get("metadata")
    if type(asset) is not dict or type(metadata) is not dict or "generation_prompt" not in metadata:
        return None
    # Built cut, in one pass: a job's worker shows its result once, in its task-succeeded event.
    brief_asset = {k: v if (type(v) is str and len(v) <= SHOWN_STRING) or type(v) in _SCALARS else _cut(v, 2)
                   for k, v in asset.items() if k != "metadata"}
    own = asset.get("metadata")
    if type(own) is dict and "cost" in own:
        brief_asset["metadata"] = {"cost": _cut(own["cost"], 3)}
    prompt = metadata["generation_prompt"]
    brief_metadata = {k: _cut(prompt[k], 2) for k in _SHOWN_PROMPT if type(prompt) is dict and prompt.get(k) is not None}
    brief_metadata.update((k, v if (type(v) is str and len(v) <= SHOWN_STRING) or type(v) in _SCALARS else _cut(v, 2))
                          for k, v in metadata.items() if k not in _UNSHOWN_METADATA)
    return {k: brief_asset if k == "asset" else brief_metadata for k in value}


def shown(value: Any, maxlen: int | None = SHOWN_MAX, maxlevels: int = 3, seen: Any = None) -> str:
    """What an event or a log line shows of a JSON value: its JSON (of a result record, what served and what
    came out), long strings and lists cut, the whole cut at ``maxlen``. Anything else (a message from
    elsewhere may carry it) goes to Celery's ``saferepr``; the signature is ``saferepr``'s, so it can stand
    in for it."""
    try:
        brief = _brief_record(value)
        text = json.dumps(brief if brief is not None else _cut(value, 0), ensure_ascii=False)
    except (_NotJSON, RecursionError, TypeError, ValueError):
        return saferepr(value, maxlen, maxlevels, seen)
    return text if maxlen is None or len(text) <= maxlen else text[: max(maxlen - 3, 0)] + "..."


def _cut(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= SHOWN_STRING else value[:SHOWN_STRING] + "..."
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _SHOWN_DEPTH:
        return "..."
    # Short strings and plain scalars, most of a record, are kept in place without a call per value.
    if isinstance(value, dict):
        return {k if type(k) is str else _cut(k, depth + 1):
                v if (type(v) is str and len(v) <= SHOWN_STRING) or type(v) in _SCALARS else _cut(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [v if (type(v) is str and len(v) <= SHOWN_STRING) or type(v) in _SCALARS else _cut(v, depth + 1)
                 for v in value[:SHOWN_ITEMS]]
        if len(value) > SHOWN_ITEMS:
            items.append(f"... {len(value) - SHOWN_ITEMS} more")
        return items if isinstance(value, list) else tuple(items)
    raise _NotJSON


def show_results_briefly() -> None:
    """Tasks' results in events and log lines go through ``shown`` instead of ``saferepr`` (Celery has no
    setting for this; ``internals.py`` lists the private use and what it saves)."""
    show_task_results_with(shown)


def argsrepr(args: Any) -> str:
    return shown(redacted_args(args))


def kwargsrepr(kwargs: Any) -> str:
    return shown(redacted_kwargs(kwargs)) if kwargs else "{}"  # a transform's arguments come by position


def redacted_request(request: Any) -> Any:
    """A shallow copy of a task request (a Celery ``Context``) with its arguments redacted; made once per
    request and arguments (a job's STARTED and SUCCESS are stored with the same request)."""
    if request is None or not (getattr(request, "args", None) or getattr(request, "kwargs", None)):
        return request
    made = getattr(request, "_redacted", None)
    if made is not None and made[0] is request.args and made[1] is request.kwargs:
        return made[2]
    shown = copy.copy(request)
    shown.args, shown.kwargs = redacted_args(request.args), redacted_kwargs(request.kwargs)
    shown._redacted = None
    try:
        request._redacted = (request.args, request.kwargs, shown)
    except AttributeError:  # a request type that takes no new attributes: redact each time
        pass
    return shown


class RedactingBackend:
    """Mixed in front of the configured result backend class (any URL scheme). A plain mixin, not a
    ``BaseBackend``: that would put the base class's polling ``get`` ahead of the Redis backend's
    pub/sub one in the method order, and every ``AsyncResult.get`` would wait half a second."""

    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None,
                     **kwargs: Any) -> Any:
        return super().store_result(  # type: ignore[misc]
            task_id, result, state, traceback, redacted_request(request), **kwargs)


@functools.cache
def redacting(backend_cls: type) -> type:
    """``backend_cls`` with ``RedactingBackend`` in front of it, importable from here by its name."""
    cls = type(f"Redacting{backend_cls.__name__}", (RedactingBackend, backend_cls), {"__module__": __name__})
    globals()[cls.__name__] = cls
    return cls


def redacting_backend(url: str, loader: Any = None, around: Callable[[type], type] | None = None) -> str:
    """The result backend of ``url`` (any scheme Celery knows) with ``RedactingBackend`` in front, named as
    Celery's ``by_url`` reads it: ``module:Class+url``. The app's ``backend_cls`` holds it, so the
    configured ``result_backend`` stays the plain URL that ``celery inspect conf`` and Flower show masked.
    ``around`` wraps the backend class first (more behaviour behind redaction)."""
    backend_cls, bare_url = by_url(url, loader)
    name = f"{__name__}:{redacting(around(backend_cls) if around else backend_cls).__name__}"
    return f"{name}+{bare_url}" if bare_url else name


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
