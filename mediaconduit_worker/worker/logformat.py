"""Log lines as JSON (``MEDIACONDUIT_LOG_FORMAT=json``): one object per line, for a log pipeline to index.

Each line has ``time``, ``level``, ``logger``, ``message`` and ``process``; a line written while a job runs
adds its ``task_id``, ``provider`` (the URL the job named, credentials scrubbed; or the route), ``model``,
``route`` and ``tenant`` (the HTTP gateway's), and with tracing on its ``trace_id`` and ``span_id``. A
traceback is ``exc_info``. The text went through the same redaction as plain log lines (the filter runs
before any formatter).
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

job_labels: ContextVar[dict[str, Any] | None] = ContextVar("mediaconduit_job_labels", default=None)
"""What the running job is, for its log lines (set by the ``observe`` step)."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "process": record.processName,
        }
        labels = job_labels.get()
        if labels:
            line.update(labels)
            span = _current_span_ids()
            if span:
                line.update(span)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def _current_span_ids() -> dict[str, str] | None:
    from . import tracing

    if tracing.tracer() is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def use_json(logger: logging.Logger) -> None:
    """Every handler of ``logger`` writes JSON lines."""
    for handler in logger.handlers:
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())
