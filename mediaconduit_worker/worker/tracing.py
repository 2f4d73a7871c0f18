"""Traces through OpenTelemetry: the ``otel`` extra (``pip install 'mediaconduit-worker[otel]'``),
configured by the standard ``OTEL_*`` variables only.

Tracing is on when the extra is installed, ``OTEL_SDK_DISABLED`` is not ``true``, and ``OTEL_TRACES_EXPORTER``
or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set. Otherwise nothing
of OpenTelemetry is imported, and a job pays one check of a module global per hook.

A trace holds:
- in a producer, ``send mediaconduit.transform`` (kind PRODUCER) around each publish; its context travels
  in the message's ``traceparent`` header, so a chain's next step, which its worker publishes, continues
  the same trace, and so does a job sent inside a caller's own span (the HTTP gateway's);
- in a worker, ``transform CAPABILITY`` (CONSUMER) for each delivery, with the GenAI semantic conventions
  (``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens``/``output_tokens``) and the job's provider (its manifest id), route, attempt
  and cache outcome;
- inside a route, ``attempt N`` for each candidate tried, with its outcome;
- the provider's HTTP calls, through OpenTelemetry's httpx instrumentation, URLs scrubbed.

No span carries a secret or an input's content: attributes are ids, names, counts and outcomes, and an
error's description is its class and its scrubbed message.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.RLock()
_tracer: Any = None
_decided = False
_building = False

_last_delivery: ContextVar[Any] = ContextVar("mediaconduit_last_delivery", default=None)
"""The span context of the delivery this thread ran last. Celery sends a chain's next step after the
task's body returned, outside its span; that publish is made a child of the delivery it follows. Each
delivery replaces it (a worker's thread runs one job at a time; a producer never sets it)."""

def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def tracer() -> Any:
    """This process's tracer, set up on first use; None when tracing is off.

    Other threads wait for the set-up (one that found it half done would run its job untraced); a log line
    written during the set-up, on the same thread, gets None."""
    global _decided, _building
    if _decided:
        return _tracer
    with _lock:
        if not _decided and not _building:
            _building = True
            try:
                _make_tracer()
            finally:
                _decided, _building = True, False
    return _tracer


def _make_tracer() -> None:
    global _tracer
    if not wanted():
        return
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError as exc:
        log.warning("OTEL_* variables ask for traces, but the otel extra is not installed (%s): no traces", exc)
        return
    exporters: list[SpanExporter] = []
    for name in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = name.strip().lower()
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())  # endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("", "none"):
            log.warning("OTEL_TRACES_EXPORTER names %r, which MediaConduit does not know (otlp, console, none)", name)
    service = os.environ.get("OTEL_SERVICE_NAME") or "mediaconduit-worker"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))  # sampler: OTEL_TRACES_SAMPLER
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*; re-made in a forked child
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider, request_hook=_scrub_request)
    _tracer = trace.get_tracer("mediaconduit_worker")


def _scrub_request(span: Any, request: Any) -> None:
    """A provider's HTTP call: its URL without credentials or query (an API key may travel there)."""
    if span is None or not span.is_recording():
        return
    shown = str(request.url.copy_with(query=None, username=None, password=None))
    for key in ("http.url", "url.full"):  # the instrumentation's old and new conventions
        span.set_attribute(key, shown)


@contextmanager
def sending(task_name: str, headers: dict[str, Any], queue: str | None) -> Iterator[None]:
    """A publish's span; its context goes into ``headers``."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    parent = _last_delivery.get()
    if parent is not None and trace.get_current_span().is_recording():
        parent = None  # inside a span (a provider's code sending a job): that span is the parent
    with _tracer.start_as_current_span(f"send {task_name}", context=parent, kind=SpanKind.PRODUCER, attributes={
            "messaging.system": "redis", "messaging.operation.type": "send",
            "messaging.destination.name": queue or ""}):
        propagate.inject(headers)  # traceparent, tracestate
        yield


@contextmanager
def consuming(request: Any, capability: str, attributes: dict[str, Any]) -> Iterator[Any]:
    """A delivery's span, the child of the context its message carries."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    carrier = {k: getattr(request, k) for k in ("traceparent", "tracestate") if getattr(request, k, None)}
    parent = propagate.extract(carrier)
    # GenAI's operation names: a chat for text to text, content generated for every other capability
    operation = "chat" if capability == "text-to-text" else "generate_content"
    attributes = {"gen_ai.operation.name": operation, **attributes}
    with _tracer.start_as_current_span(f"transform {capability}", context=parent, kind=SpanKind.CONSUMER,
                                       attributes=attributes, record_exception=False,
                                       set_status_on_exception=False) as span:
        _last_delivery.set(trace.set_span_in_context(span))
        yield span


def attempt(index: int, provider_url: str, model: str) -> Any:
    """A route candidate's span (a no-op context when tracing is off)."""
    if _tracer is None:
        return nullcontext(None)
    from ..redaction import redact_url

    return _tracer.start_as_current_span(f"attempt {index}", record_exception=False, set_status_on_exception=False,
                                         attributes={"mediaconduit.candidate": index, "gen_ai.request.model": model,
                                                     "mediaconduit.provider_url": redact_url(provider_url)})


def failed(span: Any, exc: BaseException, secrets: tuple[str, ...] = ()) -> None:
    """Mark ``span`` failed with the error's class and its scrubbed message."""
    from opentelemetry.trace import Status, StatusCode

    from ..redaction import scrub

    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, scrub(f"{type(exc).__name__}: {exc}", secrets)[:500]))
