"""Deploys drop nothing: on SIGTERM a worker stops taking jobs, lets running ones finish within
``MEDIACONDUIT_SHUTDOWN_GRACE`` seconds, then hands the rest back to the queue at once.

Celery's warm shutdown (what SIGTERM starts) already stops consuming and, when its connection closes,
kombu puts the messages it held but had not started back in the queue; but it waits for running jobs
without end, so an orchestrator's SIGKILL comes first and their messages wait for the visibility
timeout. Celery 5.5's soft shutdown (``worker_soft_shutdown_timeout`` with ``REMAP_SIGTERM=SIGQUIT``)
bounds the wait, but does not do the job here: in a thread pool it fails (``terminate_job`` is not
implemented, the worker then waits for the job after all and exits 1), it waits the whole timeout
even when the jobs end sooner, and ``REMAP_SIGTERM`` must be in the environment before Celery is
imported, which a plain ``celery worker`` command line cannot promise. So: at the end of the grace, each
job still running is interrupted through its pool's deadline machinery (``deadlines.interrupt_job``;
a remote job cancels its remote prediction on the way out) and its message goes back to the queue
(``revokes.interrupted``: ``Reject(requeue=True)``). A prefork child that does not let go within
``HARD_AFTER`` seconds is killed; its message comes back when the worker's connection closes.

Prefork children ignore SIGTERM, as billiard's own ``REMAP_SIGTERM`` mode makes them: systemd (and a
``kill`` of the process group) sends it to every process at once, and a child that died of it would
drop its job mid-way; the main process stops them (the interrupt, then SIGKILL; billiard's hard time
limit follows its SIGTERM with SIGKILL too). A cold shutdown (SIGQUIT) hands running jobs back at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from celery import signals
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.worker.state import active_requests, task_ready
from kombu.common import ignore_errors

from ..settings import get_settings
from .deadlines import _gevent_patched, interrupt_job

log = logging.getLogger(__name__)
#: Seconds after the interruption before a prefork child still in its job is killed.
HARD_AFTER = 3.0
_consumer: Any = None
_started = False


@signals.worker_ready.connect
def _remember_consumer(sender: Any = None, **_: Any) -> None:
    global _consumer
    _consumer = sender


@signals.worker_process_init.connect
def _leave_sigterm_to_the_main_process(**_: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@signals.worker_shutting_down.connect
def _start_grace(sig: str | None = None, how: str | None = None, **_: Any) -> None:
    """Celery's SIGTERM (or SIGINT, SIGQUIT) handler in the worker's main process: a shutdown begins (a
    second signal during it changes nothing here)."""
    global _started
    if _consumer is None or _started:
        return
    _started = True
    if how != "Warm":
        hand_back(_consumer)
        return
    if _gevent_patched():  # a gevent pool's consumer may go on taking jobs through the warm shutdown
        import gevent

        gevent.spawn(_stop_consuming, _consumer)
    grace = get_settings().shutdown_grace
    log.warning("%s: stopping; running jobs have %gs to finish (MEDIACONDUIT_SHUTDOWN_GRACE), then go back "
                "to the queue", sig, grace)
    _later(grace, hand_back, _consumer)


def hand_back(consumer: Any) -> None:
    """Interrupt every job still running; kill a prefork child that keeps its job past ``HARD_AFTER``."""
    running = list(active_requests)
    if not running:
        return
    log.warning("grace over: handing %d running job(s) back to the queue", len(running))
    _stop_consuming(consumer)  # so no job handed back comes straight back here
    pool = consumer.pool
    for request in running:
        interrupt_job(request, pool)
    if isinstance(pool, PreforkPool):
        _later(HARD_AFTER, _kill_stragglers, pool)


def _later(seconds: float, fn: Callable[..., None], *args: Any) -> None:
    """``fn(*args)`` in ``seconds``, from a signal handler: a greenlet under gevent (whose signal handlers
    run in its event loop, where starting a thread would block), else a daemon thread."""
    if _gevent_patched():
        import gevent

        gevent.spawn_later(seconds, fn, *args)
        return
    timer = threading.Timer(seconds, fn, args)
    timer.daemon = True
    timer.start()


def _stop_consuming(consumer: Any) -> None:
    """As Celery's cold shutdown does: no more messages for this worker."""
    if consumer.task_consumer is not None:
        ignore_errors(consumer, consumer.task_consumer.cancel)


def refused_while_stopping(request: Any) -> bool:
    """A job that reaches a pool once this worker is stopping (a message already on its way) goes back to
    the queue instead of starting here; the worker's main process asks this before a job goes to a pool."""
    if not _started:
        return False
    log.warning("job %s handed back to the queue unstarted: this worker is stopping", request.id)
    task_ready(request)
    request.reject(requeue=True)
    return True


def _kill_stragglers(pool: Any) -> None:
    for request in list(active_requests):
        if request.worker_pid and not request.acknowledged:
            log.error("job %s did not stop when interrupted; killing its process %s", request.id, request.worker_pid)
            request.cancel(pool, signal=signal.SIGKILL, emit_retry=False)
