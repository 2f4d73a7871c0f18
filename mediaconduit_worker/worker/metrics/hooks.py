"""Where metrics meet the worker: at its start (``worker_init``, in the main process, before a prefork
pool forks) the metrics step and the call observer are installed when this worker records metrics, and
the endpoint is served when this process owns the port; each worker announces its slots once ready; a
pool process that exits removes its live gauges."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import signals

from ...settings import get_settings
from .multiproc import ENV, prepare, recording

log = logging.getLogger(__name__)


def install(task: Any) -> None:
    """The metrics step outermost in ``task``'s steps, the call observer among the provider calls'."""
    from .. import calls
    from .step import measure, observe_call

    if measure not in task.steps:
        task.steps = (measure, *task.steps)
    if observe_call not in calls.CALL_OBSERVERS:
        calls.CALL_OBSERVERS.append(observe_call)


@signals.worker_init.connect
def _start_metrics(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    port = settings.metrics_port
    if port is not None and not recording():  # a plain ``celery worker`` with the port set
        prepare(port)
    if not recording():
        return
    from ..app import TRANSFORM_TASK, app

    install(app.tasks[TRANSFORM_TASK])
    if port is not None:
        from .exporter import serve

        serve(port, settings.metrics_address, Path(os.environ[ENV]))


@signals.worker_ready.connect
def _count_slots(sender: Any = None, **_: Any) -> None:
    if sender is None or not recording():
        return
    from . import series

    series.pool_slots.labels(sender.hostname).set(int(sender.controller.concurrency))


@signals.worker_process_shutdown.connect
def _forget_this_process(pid: int | None = None, **_: Any) -> None:
    if not recording():
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid(), os.environ[ENV])
