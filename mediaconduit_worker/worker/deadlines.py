"""Hands each job's deadline to the SDK (``deadline.time_left()``): the soft time limit of the job's
message, else the worker's. Providers then stop their own long calls (and cancel paid remote work)
before Celery's soft limit interrupts them."""

from __future__ import annotations

from typing import Any

from celery import Task, signals

from ..deadline import set_job_deadline

MARGIN = 2.0
"""Seconds kept back for cleaning up (cancelling a prediction, removing temporary files)."""


@signals.task_prerun.connect
def _start(task: Task | None = None, **_: Any) -> None:
    if task is None:
        return
    limits = task.request.timelimit or (None, None)
    hard, soft = limits if isinstance(limits, list | tuple) and len(limits) == 2 else (None, None)
    soft = soft or task.app.conf.task_soft_time_limit
    hard = hard or task.app.conf.task_time_limit
    limit = min((x for x in (soft, hard) if x), default=None)
    set_job_deadline(None if limit is None else max(float(limit) - MARGIN, 0.5))


@signals.task_postrun.connect
def _end(**_: Any) -> None:
    set_job_deadline(None)
