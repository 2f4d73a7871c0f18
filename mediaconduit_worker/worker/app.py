"""The Celery app and its one task, ``mediaconduit.transform``: all a job meets on Celery's side.

At the producer (or a worker sending a chain step) a job is checked (JSON only, within
``MEDIACONDUIT_MAX_JOB_BYTES``), its execution options go into the ``mediaconduit_exec`` header, its
arguments are redacted for events and logs, and it is routed to its capability's queue (the explicit
option, else the provider manifest's entry for the model). On the worker the task's body is the
pipeline's steps (``worker/pipeline``), which return a ``TransformResult`` as JSON.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from celery import Celery, Task, signals
from kombu import Queue

from ..capabilities import MediaCapability
from ..payload import check_job
from ..settings import get_settings
from . import tracing
from .broker import ensure_broker
from .events import reporting
from .flower import apply_flower_defaults
from .headers import EVENTS_HEADER, EXEC_HEADER, SENT_HEADER
from .logformat import use_json
from .pipeline import LEGACY_OPTIONS, STEPS, Run, Step, named_arguments, run_steps, split_options
from .redaction import LOG_FILTER, argsrepr, kwargsrepr, redacting_backend, show_results_briefly
from .redis_state import MAX_CONNECTIONS, sentinel_options
from .reliability import WORKER_LOST_RETRY_DELAY, CrashAwareRequest, celery_options
from .replicas import waiting
from .revokes import PersistentControl
from .routes import capability_for, is_route, route_for
from .transport import install as install_transport

if TYPE_CHECKING:
    from .streams import StreamChunk

DEFAULT_QUEUE = "mediaconduit"
TRANSFORM_TASK = "mediaconduit.transform"
CAPABILITY_QUEUES = [c.value for c in MediaCapability]


def transform_queue(name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_: Any) -> dict[str, str] | None:
    """Send a transform to its capability's queue (the explicit execution option, else the manifest's model
    entry)."""
    if name != TRANSFORM_TASK:
        return None
    call = named_arguments(args, kwargs)
    given = ((options.get("headers") or {}).get(EXEC_HEADER) or {}).get("capability")
    asked = {"capability": given} if given is not None else call.get("options")
    if is_route(call.get("provider")):  # a bad routes file or route name is refused here, before queueing
        return {"queue": route_for(call["provider"], call.get("model"), asked).capability.value}
    cap = capability_for(call.get("provider"), call.get("model"), asked)
    return {"queue": cap.value if cap else DEFAULT_QUEUE}


def with_exec_header(args: Any, kwargs: Any, options: dict[str, Any]) -> tuple[Any, Any]:
    """A transform's arguments with the execution options its ``options`` carry (``capability``, ``cache``)
    moved into the ``mediaconduit_exec`` header of ``options`` (the header's own values win); the model's
    options the message carries are then only the model's."""
    call = named_arguments(args, kwargs)
    model_options = call.get("options")
    if not isinstance(model_options, dict) or not any(k in model_options for k in LEGACY_OPTIONS):
        return args, kwargs
    own, execution = split_options(model_options)
    headers = dict(options.get("headers") or {})
    headers[EXEC_HEADER] = {**execution.as_header(), **(headers.get(EXEC_HEADER) or {})}
    options["headers"] = headers
    if kwargs and "options" in kwargs:
        return args, {**kwargs, "options": own}
    return (*tuple(args)[:3], own, *tuple(args)[4:]), kwargs


class MediaConduitCelery(Celery):
    """Celery that checks a job before it is queued and never lets its secrets out: the result
    backend stores every state with redacted arguments (and tells a transform's event stream,
    ``events.py``), and sent messages carry redacted reprs."""

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Every job leaves through here (``apply_async``, chain steps, Flower's ``send-task`` and
        ``async-apply``): a transform over ``MEDIACONDUIT_MAX_JOB_BYTES``, nested too deeply or not
        JSON is refused before anything is queued, and events and logs show redacted arguments.
        ``start_by`` (a datetime) is the latest moment the job may start: it becomes Celery's ``expires``."""
        if name == TRANSFORM_TASK:
            check_job(named_arguments(args, kwargs), "the job (input, provider, model, options)")
            options["headers"] = {**(options.get("headers") or {}), SENT_HEADER: time.time()}
        if (start_by := options.pop("start_by", None)) is not None:
            if options.get("expires") is None:  # Celery passes the task's own expires, None, when unset
                options["expires"] = start_by  # Celery's expires, as an absolute time
        options.setdefault("argsrepr", argsrepr(args))
        options.setdefault("kwargsrepr", kwargsrepr(kwargs))
        return super().send_task(name, args, kwargs, **options)


def make_app() -> Celery:
    settings = get_settings()
    install_transport(stock=settings.broker_transport == "kombu")
    app = MediaConduitCelery(
        "mediaconduit",
        include=["mediaconduit_worker.worker.deadlines", "mediaconduit_worker.worker.status", "mediaconduit_worker.batch.summary",
                 "mediaconduit_worker.worker.shutdown", "mediaconduit_worker.worker.blobgc",
                 "mediaconduit_worker.worker.metrics.hooks", "mediaconduit_worker.worker.metrics.scaling"],
        control=PersistentControl,
    )
    app.conf.update(
        broker_url=settings.effective_broker_url,
        result_backend=settings.effective_result_backend,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        result_extended=True,
        result_expires=settings.result_expires,
        task_time_limit=settings.task_time_limit,
        # No soft limit: the job's own deadline (deadlines.py) raises a clear TimeLimitError just before the
        # hard limit in every pool, where Celery's soft limit would cut prefork jobs short and no other pool.
        task_soft_time_limit=None,
        task_default_queue=DEFAULT_QUEUE,
        task_queues=[Queue(q, routing_key=q) for q in (DEFAULT_QUEUE, *CAPABILITY_QUEUES)],
        task_routes=(transform_queue,),
        redis_max_connections=MAX_CONNECTIONS,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout,
                                          **sentinel_options(settings.effective_result_backend)},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
    )
    app.conf.update(celery_options())
    # The result backend class Celery builds from ``result_backend``, with redaction in front (``backend_cls``
    # comes before the setting in Celery's choice of backend); behind it, each stored state written to the
    # job's event stream (events.py) and result writes that wait for replicas when MEDIACONDUIT_WAIT_REPLICAS
    # asks (replicas.py).
    app.backend_cls = redacting_backend(settings.effective_result_backend, app.loader,
                                        around=lambda cls: reporting(waiting(cls, settings.wait_replicas)))
    apply_flower_defaults()
    return app


app = make_app()


@signals.celeryd_init.connect
def _start_embedded_broker(**_: Any) -> None:
    """A plain ``celery worker`` with no broker configured gets the embedded Redis too."""
    ensure_broker()


@signals.worker_init.connect
def _show_results_briefly(**_: Any) -> None:
    show_results_briefly()


@signals.worker_ready.connect
def _say_who_signs(**_: Any) -> None:
    """Once at start: who signs this worker's media outputs (Content Credentials), or that nothing is signed."""
    from .signatures import announce

    announce()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_logs(logger: Any = None, **_: Any) -> None:
    """Every handler of the worker's loggers scrubs secrets from what it writes (as JSON lines when
    ``MEDIACONDUIT_LOG_FORMAT=json``)."""
    for handler in getattr(logger, "handlers", []):
        if LOG_FILTER not in handler.filters:
            handler.addFilter(LOG_FILTER)
    if logger is not None and get_settings().log_format == "json":
        use_json(logger)


#: Bounds transient retries and redeliveries after a lost worker process alike: Celery counts both
#: in ``request.retries``.
MAX_RETRIES = 5


class TransformTask(Task):
    """The transform's task class. The app's ``send_task`` checks each job before it is queued and
    redacts what events and logs show of it (see ``app.MediaConduitCelery``)."""

    #: Refuses jobs too large to run, shows redacted arguments, names a job that keeps crashing its
    #: worker process a poison job.
    Request = CrashAwareRequest
    steps: tuple[Step, ...] = STEPS
    """The steps this worker runs a job through: the pipeline's, and the metrics step first when it records
    metrics (``metrics.hooks.install``)."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        # Celery would stamp the producer's configured limits into the message; leave them to the worker
        # (MEDIACONDUIT_TASK_TIME_LIMIT where the job runs) unless this call sets its own.
        options.setdefault("time_limit", None)
        options.setdefault("soft_time_limit", None)
        args, kwargs = with_exec_header(args, kwargs, options)
        if tracing.tracer() is None:
            return super().apply_async(args, kwargs, **options)
        options["headers"] = headers = dict(options.get("headers") or {})  # the trace context goes in a copy
        with tracing.sending(self.name, headers, options.get("queue")):
            return super().apply_async(args, kwargs, **options)


    def stream(self, input: Any, provider: str, model: str, options: dict[str, Any] | None = None, *,
               timeout: float | None = None, **send: Any) -> Iterator[StreamChunk]:
        """Send a transform whose stream is read (``EVENTS_HEADER``) and follow its output chunks as they are
        made (``stream_of``); ``send``: further ``apply_async`` options. Sent at once, iterated later; each
        chunk names its job (``chunk.task_id``) and its id, to resume after it."""
        headers = {**dict(send.pop("headers", None) or {}), EVENTS_HEADER: True}
        sent = self.apply_async((input, provider, model, options or {}), headers=headers, **send)
        return self.stream_of(sent.id, timeout=timeout)

    def stream_of(self, task_id: str, after: str = "0-0", timeout: float | None = None) -> Iterator[StreamChunk]:
        """The output chunks of a job already sent with ``EVENTS_HEADER``, after stream id ``after``, until it
        ends (``streams.follow``); ``timeout``: seconds without the job ending before ``TimeoutError``."""
        from .streams import follow

        return follow(self.app, task_id, after, timeout)


@app.task(name=TRANSFORM_TASK, bind=True, base=TransformTask, max_retries=MAX_RETRIES,
          default_retry_delay=WORKER_LOST_RETRY_DELAY)
def transform(self: Task, input: Any, provider: str, model: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``input`` into an output asset with ``provider``'s ``model``; JSON TransformResult out. The body
    is the pipeline's steps (``worker/pipeline``)."""
    return run_steps(self.steps, Run(self, self.request, (input, provider, model, options)))
