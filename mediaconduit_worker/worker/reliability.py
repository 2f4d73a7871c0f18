"""Which failures are retried, and how a job that keeps killing its worker process is stopped.

Celery does the heavy lifting: ``task_retry_on_worker_lost`` re-sends a job whose pool child died
(SIGKILL, OOM, segfault) as a retry, so the delivery count travels in the message itself
(``request.retries``) and survives worker restarts. Once ``max_retries`` is used up Celery acks the
message and stores a FAILURE instead of requeueing it forever; :class:`CrashAwareRequest` makes
that final error say what happened (and refuses jobs too large to run before they reach a pool process).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import httpx
import kombu.exceptions
import redis.exceptions
from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery.app.task import Context
from celery.utils.saferepr import saferepr
from celery.worker.request import Request
from celery.worker.state import task_ready

from ..errors import InvalidInputError, PoisonJobError, TransientError
from ..payload import refuse_size
from ..settings import get_settings
from .redaction import argsrepr, kwargsrepr
from .redis_state import sentinel_options
from .revokes import end_unrun, why_not_run
from .shutdown import refused_while_stopping

log = logging.getLogger(__name__)

#: Exceptions from provider code or the plumbing around it that mean "try again later", not "this
#: job is wrong": connection refused/reset while a service restarts, a broker or result-backend blip,
#: network timeouts, and ``TransientError`` (HTTP 429/5xx, mapped by the HTTP helpers).
TRANSIENT_EXCEPTIONS: tuple[type[Exception], ...] = (
    TransientError,
    ConnectionError,
    socket.timeout,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    httpx.TransportError,
)

#: Seconds before a job whose worker process died is delivered again (``default_retry_delay``).
WORKER_LOST_RETRY_DELAY = 2


def backoff(retries: int, retry_after: float | None = None, cap: float = 60.0) -> float:
    """Seconds before retry number ``retries + 1``: the server's hint, else exponential (1, 2, 4 … cap)."""
    if retry_after is not None:
        return max(0.0, float(retry_after))
    return float(min(2**retries, cap))


class CrashAwareRequest(Request):
    """Worker-side request of a transform, in the worker's main process, before any pool process:

    - a job larger than ``MEDIACONDUIT_MAX_JOB_BYTES`` (a message from Flower, another language or
      a producer without the check) fails at once, without going to a pool process or being stored whole;
    - ``argsrepr``/``kwargsrepr`` (the ``task-received`` event, log lines, the pool's request) are built
      from redacted arguments, whatever the message's own headers say;
    - when a lost worker process ends a job for good, the error says it was a poison job.
    """

    _already_revoked: bool  # Celery's (worker/internals.py)

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        # Celery's strategy hands the message's headers and body (decoded, for an older protocol) by keyword:
        # the redacted argument reprs and a too-large job's stand-in arguments go in through them.
        headers = dict(message.headers if kwargs.get("headers") is None else kwargs["headers"])
        job_args, job_kwargs, embed = kwargs["body"] if kwargs.get("decoded") else message.payload
        self._too_large: InvalidInputError | None = None
        self._embed: dict[str, Any] = embed or {}
        size = len(message.body or b"")
        try:
            refuse_size(size, f"job {headers.get('id')}")
        except InvalidInputError as exc:
            self._too_large = exc
            job_args, job_kwargs = [f"[{size:,} bytes: too large to run]"], {}
            kwargs.update(body=(job_args, job_kwargs, embed), decoded=True)
        headers["argsrepr"], headers["kwargsrepr"] = argsrepr(job_args), kwargsrepr(job_kwargs)
        super().__init__(message, *args, **{**kwargs, "headers": headers})

    def revoked(self) -> bool:
        """Also true for a job too large to run, one whose revoke is stored in Redis and one past its
        ``expires`` (``revokes.py``): Celery asks this just before a job goes to a pool process, and skips
        it when true. The job is ended here, once: FAILURE, or REVOKED saying when and why."""
        if self._already_revoked:
            return True
        if self._too_large is None:
            if (why := why_not_run(self)) is None:
                if refused_while_stopping(self):
                    self._already_revoked = True
                    return True
                return super().revoked()
            self._already_revoked = True
            end_unrun(self, self.unrun_context(), why)
            return True
        self._already_revoked = True
        self._fail_unrun(self._too_large)
        return True

    def unrun_context(self) -> Context:
        """The job's task context as Celery builds it (its headers, arguments, callbacks, errbacks and chain):
        what an unrun job's end is stored and chained with."""
        return Context({**self.request_dict, **self._embed})

    def _fail_unrun(self, exc: InvalidInputError) -> None:
        """Store FAILURE (with the stand-in arguments), tell the event stream, log, and drop the message."""
        task_ready(self)
        self.task.backend.mark_as_failure(self.id, exc, request=self.unrun_context(), store_result=self.store_errors)
        self.send_event("task-failed", exception=saferepr(exc), traceback=None)
        log.error("Task %s[%s] refused: %s", self.name, self.id, exc)
        self.acknowledge()

    def on_failure(self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        max_retries = self.task.max_retries
        retries = self.request_dict.get("retries") or 0
        if isinstance(exc, WorkerLostError) and max_retries is not None and retries >= max_retries:
            deliveries = retries + 1
            try:
                raise PoisonJobError(
                    f"job {self.id} ({self.task_name}) crashed its worker process on {deliveries} deliveries "
                    f"(last: {exc}); giving up instead of delivering it again"
                ) from exc
            except PoisonJobError:
                exc_info = ExceptionInfo()
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def celery_options() -> dict[str, Any]:
    """Celery settings that turn crashes and broker blips into delays instead of lost jobs."""
    settings = get_settings()
    visibility = settings.visibility_timeout
    return {
        # kombu's own transport (MEDIACONDUIT_BROKER_TRANSPORT=kombu, or a worker of an older version during
        # an upgrade) keeps jobs in Redis' unacked table until the visibility timeout, and sweeps it only
        # every interval x throttle seconds (100 s by default). Sweep at a tenth of the timeout (1-10 s, one
        # cheap ZRANGE) so recovery takes about the visibility timeout. MediaConduit's transport uses leases.
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "unacked_restore_interval": max(1, min(10, visibility // 10)),
            "unacked_restore_throttle": 1,
            # A sweeper killed while holding the sweep lock blocks sweeps until it expires (default 300 s).
            "unacked_mutex_expire": 30,
            # A worker's jobs come back this long after it stopped renewing its lease (worker/consumers.py).
            "lease_seconds": settings.worker_lease,
            # A publish and an acknowledgement wait for this many replicas (worker/replicas.py).
            "wait_replicas": settings.wait_replicas,
            **sentinel_options(settings.effective_broker_url),
        },
        # A job redelivered after its worker died whose SUCCESS is already stored is not run again.
        "worker_deduplicate_successful_tasks": True,
        # A dead pool child: re-send the job as a retry (bounded by max_retries) instead of a requeue loop.
        "task_retry_on_worker_lost": True,
        # A producer or a chain step publishing during a broker restart keeps trying for ~1 minute.
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 30, "interval_start": 0, "interval_step": 0.5, "interval_max": 2},
        # Workers reconnect for as long as the broker is away.
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        # Result reads/writes survive a short backend outage.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
    }
