"""A job's run: the state the steps share, and the chain that calls them in order.

Each step is a callable ``step(run, proceed)``: it may act before the rest of the steps (``proceed()``
runs them) and after them, answer without calling them (a cache hit), or wrap them (a deadline, a
retry, the scrubbing of secrets from errors), as dramatiq's middleware wraps its actor call. Steps
talk to each other only through the ``Run``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...record import ResultBuilder
from ..calls import Served
from ..deadlines import JobDeadline
from .job import Job

Step = Callable[["Run", Callable[[], None]], None]


@dataclass(slots=True)
class Run:
    """One delivery of one job, as the steps fill it in."""

    task: Any
    request: Any
    """The Celery request, read once: ``task.request`` is per thread, and later steps may run in the
    deadline's companion thread."""
    args: tuple[Any, Any, Any, Any]
    """The message's arguments as sent (``input``, ``provider``, ``model``, ``options``): a retry sends them again."""
    started: float = field(default_factory=time.perf_counter)
    secrets: tuple[str, ...] = ()
    job: Job = field(init=False)
    deadline: JobDeadline = field(init=False)
    served: Served | None = None
    record: ResultBuilder = field(default_factory=ResultBuilder)
    result: dict[str, Any] | None = None
    """The stored result's JSON, once a step made it."""


def run_steps(steps: Sequence[Step], run: Run) -> dict[str, Any]:
    """Call ``steps`` in order around ``run``; the result the steps made."""
    last = len(steps)

    def at(index: int) -> None:
        if index < last:
            steps[index](run, lambda: at(index + 1))

    at(0)
    if run.result is None:
        raise RuntimeError("the job's steps ended without a result")  # a step list that lost its record step
    return run.result
