"""The Celery app: JSON only, late acks, one queue per capability, jobs routed by their model."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from celery.app.backends import by_url
from kombu import Queue

from ..payload import check_job
from ..settings import get_settings
from .broker import ensure_broker
from .flower import apply_flower_defaults
from .redaction import LOG_FILTER, argsrepr, kwargsrepr, redacting, show_results_briefly
from .reliability import celery_options
from .routing import CAPABILITY_QUEUES, DEFAULT_QUEUE, TRANSFORM_TASK, named_arguments, route_transform
from .transport import install as install_transport


class MediaConduitCelery(Celery):
    """Celery that checks a job before it is queued and never lets its secrets out: the result
    backend stores every state with redacted arguments, and sent messages carry redacted reprs."""

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Every job leaves through here (``apply_async``, chain steps, Flower's ``send-task`` and
        ``async-apply``): a transform over ``MEDIACONDUIT_MAX_JOB_BYTES``, nested too deeply or not
        JSON is refused before anything is queued, and events and logs show redacted arguments."""
        if name == TRANSFORM_TASK:
            check_job(named_arguments(args, kwargs), "the job (input, provider, model, options)")
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
        include=["mediaconduit_worker.worker.tasks", "mediaconduit_worker.worker.deadlines", "mediaconduit_worker.worker.status", "mediaconduit_worker.batch.summary"],
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
