"""The Celery app and its one task, ``mediaconduit.transform``: all a job meets on Celery's side.

At the producer (or a worker sending a chain step) a job is checked (JSON only, within
``MEDIACONDUIT_MAX_JOB_BYTES``), its arguments are redacted for events and logs, and it is routed to its
capability's queue (the explicit option, else the provider manifest's entry for the model). On the
worker the task loads the provider, runs the model and returns a ``TransformResult`` as JSON, every
error scrubbed of the job's secrets.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task, signals
from celery.app.backends import by_url
from celery.exceptions import Retry
from kombu import Queue

from ..assets import job_input
from ..capabilities import MediaCapability, parse_capability
from ..errors import InvalidInputError
from ..payload import check_job, check_json
from ..provenance import complete_record
from ..record import result_record
from ..redaction import redact_url, scrub_exception, secret_values
from ..settings import get_settings
from . import cache as result_cache
from .broker import ensure_broker
from .calls import BATCH_HEADER, serve_direct
from .deadlines import JobDeadline, JobInterrupted
from .failover import RouteRun
from .flower import apply_flower_defaults
from .loader import get_registry
from .redaction import LOG_FILTER, argsrepr, current_secrets, kwargsrepr, redacting, show_results_briefly
from .reliability import TRANSIENT_EXCEPTIONS, WORKER_LOST_RETRY_DELAY, CrashAwareRequest, backoff, celery_options
from .replay import SERVICE_PIN_OPTION, pin_services, service_record
from .revokes import PersistentControl, interrupted
from .routes import capability_for, is_route, route_for
from .transport import install as install_transport

log = logging.getLogger(__name__)
DEFAULT_QUEUE = "mediaconduit"
TRANSFORM_TASK = "mediaconduit.transform"
CAPABILITY_QUEUES = [c.value for c in MediaCapability]


def named_arguments(args: Any, kwargs: Any) -> dict[str, Any]:
    """A transform's arguments by name (``input``, ``provider``, ``model``, ``options``)."""
    return {**dict(zip(("input", "provider", "model", "options"), args or ())), **dict(kwargs or {})}


def route_transform(name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_: Any) -> dict[str, str] | None:
    """Send a transform to its capability's queue (explicit option, else the manifest's model entry)."""
    if name != TRANSFORM_TASK:
        return None
    call = named_arguments(args, kwargs)
    if is_route(call.get("provider")):  # a bad routes file or route name is refused here, before queueing
        return {"queue": route_for(call["provider"], call.get("model"), call.get("options")).capability.value}
    cap = capability_for(call.get("provider"), call.get("model"), call.get("options"))
    return {"queue": cap.value if cap else DEFAULT_QUEUE}


class MediaConduitCelery(Celery):
    """Celery that checks a job before it is queued and never lets its secrets out: the result
    backend stores every state with redacted arguments, and sent messages carry redacted reprs."""

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Every job leaves through here (``apply_async``, chain steps, Flower's ``send-task`` and
        ``async-apply``): a transform over ``MEDIACONDUIT_MAX_JOB_BYTES``, nested too deeply or not
        JSON is refused before anything is queued, and events and logs show redacted arguments.
        ``start_by`` (a datetime) is the latest moment the job may start: it becomes Celery's ``expires``."""
        if name == TRANSFORM_TASK:
            check_job(named_arguments(args, kwargs), "the job (input, provider, model, options)")
        if (start_by := options.pop("start_by", None)) is not None:
            options.setdefault("expires", start_by)  # Celery's expires, as an absolute time
        options.setdefault("argsrepr", argsrepr(args))
        options.setdefault("kwargsrepr", kwargsrepr(kwargs))
        return super().send_task(name, args, kwargs, **options)

    def _get_backend(self) -> Any:
        backend_cls, url = by_url(self.backend_cls or self.conf.result_backend, self.loader)
        return redacting(backend_cls)(app=self, url=url)


def make_app() -> Celery:
    settings = get_settings()
    install_transport()
    app = MediaConduitCelery(
        "mediaconduit",
        include=["mediaconduit_worker.worker.deadlines", "mediaconduit_worker.worker.status", "mediaconduit_worker.batch.summary",
                 "mediaconduit_worker.worker.shutdown", "mediaconduit_worker.worker.blobgc"],
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
        task_routes=(route_transform,),
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
    )
    app.conf.update(celery_options())
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


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_logs(logger: Any = None, **_: Any) -> None:
    """Every handler of the worker's loggers scrubs secrets from what it writes."""
    for handler in getattr(logger, "handlers", []):
        if LOG_FILTER not in handler.filters:
            handler.addFilter(LOG_FILTER)


#: Bounds transient retries and redeliveries after a lost worker process alike: Celery counts both
#: in ``request.retries``.
MAX_RETRIES = 5


class TransformTask(Task):
    """The transform's task class. The app's ``send_task`` checks each job before it is queued and
    redacts what events and logs show of it (see ``app.MediaConduitCelery``)."""

    #: Refuses jobs too large to run, shows redacted arguments, names a job that keeps crashing its
    #: worker process a poison job.
    Request = CrashAwareRequest

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        # Celery would stamp the producer's configured limits into the message; leave them to the worker
        # (MEDIACONDUIT_TASK_TIME_LIMIT where the job runs) unless this call sets its own.
        options.setdefault("time_limit", None)
        options.setdefault("soft_time_limit", None)
        return super().apply_async(args, kwargs, **options)

    def _get_exec_options(self) -> dict[str, Any]:
        # Only the options this task sets: Celery passes each one down five calls that take **options,
        # and an unset one (None, as good as absent there) costs a comparison with every named
        # parameter of each, about a tenth of what the producer adds to a job.
        options: dict[str, Any] | None = self._exec_options  # type: ignore[has-type]
        if options is None:
            options = self._exec_options = {k: v for k, v in super()._get_exec_options().items() if v is not None}
        return options


@app.task(name=TRANSFORM_TASK, bind=True, base=TransformTask, max_retries=MAX_RETRIES,
          default_retry_delay=WORKER_LOST_RETRY_DELAY)
def transform(self: Task, input: Any, provider: str, model: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``input`` into an output asset with ``provider``'s ``model``; JSON TransformResult out.

    Every error leaves with the job's secrets scrubbed (its options' secret values, the credentials in
    its provider URL): the FAILURE or RETRY stored, the log line and the retried message's error alike.
    """
    secrets = job_secrets(provider, options)
    shown = current_secrets.set(tuple(secrets))
    try:
        return _transform(self, input, provider, model, options)
    except Retry:
        raise
    except JobInterrupted:
        raise interrupted(self) from None  # cancelled (REVOKED), or handed back by a shutting-down worker
    except Exception as exc:
        failure = scrub_exception(exc, secrets)
        if failure is exc:
            raise
    finally:
        current_secrets.reset(shown)
    raise failure  # outside the handler: no implicit link back to the unscrubbed original


def job_secrets(provider: Any, options: Any) -> list[str]:
    """What must not be shown of a job: its options' secret values and its provider URL's credentials."""
    try:
        return secret_values([provider, options])
    except RecursionError:
        return []


def _transform(task: Task, input: Any, provider: str, model: str, options: dict[str, Any] | None) -> dict[str, Any]:
    started = time.perf_counter()
    request = task.request  # a thread-local lookup each time: read it once
    # A message from elsewhere (Flower, another language) skipped the producer's check; its size was
    # checked before it reached this process.
    check_json(named_arguments((input, provider, model, options), None))
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(f"options must be a JSON object, got {type(options).__name__}")
    opts = dict(options or {})
    requested_cap = opts.pop("capability", None)
    pin_services(opts.pop(SERVICE_PIN_OPTION, None))  # replay: this job's service at the recorded commit
    if not isinstance(provider, str) or not provider:
        raise InvalidInputError(f"provider must be a URL string, got {provider!r}")
    routed = is_route(provider)
    if not routed and (not isinstance(model, str) or not model):
        raise InvalidInputError(f"model must be a model id string, got {model!r}")
    model_input = job_input(input)
    batch = getattr(request, BATCH_HEADER, None)
    deadline = JobDeadline(task, request, provider, model)  # the hard time limit, held in every pool
    if (hit := result_cache.lookup(task, deadline, provider, model, opts, model_input, started)) is not None:
        return hit  # opt-in (options.cache or the manifest): no provider call
    retry_with: BaseException | None = None
    try:
        if routed:
            served = deadline.run(RouteRun(route_for(provider, model, options), model_input, opts, batch).serve)
        else:
            served = deadline.run(serve_direct, provider, model, model_input, opts, batch)
    except TRANSIENT_EXCEPTIONS as exc:
        retry_with = scrub_exception(exc, job_secrets(provider, options))
    if retry_with is not None:
        countdown = backoff(request.retries, getattr(retry_with, "retry_after", None))
        peeked = get_registry().peek(provider)
        who = peeked.manifest.id if peeked else redact_url(provider)
        log.warning("transient error from %s/%s (%s); retry in %.1fs", who, model, retry_with, countdown)
        # Outside the handler, so the retry's traceback carries only the scrubbed error.
        raise task.retry(exc=retry_with, countdown=countdown, args=(input, provider, model, options), kwargs={})
    loaded, runnable, output, model = served.loaded, served.runnable, served.output, served.model
    if "generation_prompt" not in output.metadata:
        output.metadata["generation_prompt"] = runnable.generation_prompt(model_input, opts, started)
    cap = parse_capability(requested_cap) if isinstance(requested_cap, str) else None
    cap = cap or runnable.capability or loaded.manifest.capability_of(model)
    source = dict(loaded.source)
    source["url"] = redact_url(str(source["url"]))
    shown_url = redact_url(served.provider_url)
    output.metadata["generation_prompt"] = complete_record(
        output.metadata["generation_prompt"], input=model_input, output=output,
        provider_url=shown_url,
        source=source, capability=str(cap) if cap else None, service=service_record(loaded.provider))
    result = result_record(output, {
        **served.route_metadata(),
        "generation_prompt": output.metadata["generation_prompt"],
        "provider": loaded.manifest.id,
        "provider_url": shown_url,
        "model": model,
        "capability": str(cap) if cap else None,
        "processing_time_ms": round((time.perf_counter() - started) * 1000, 3),
        "source": source,
        "task_id": request.id,
        "worker": request.hostname,
    }, metadata_first=served.route is not None)
    return result_cache.store(request.id, result)
