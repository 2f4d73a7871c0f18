"""Step: everything after it runs under the job's hard time limit, in whichever way the pool allows
(``worker/deadlines.py``)."""

from __future__ import annotations

from collections.abc import Callable

from ..deadlines import JobDeadline
from .run import Run


def hold_deadline(run: Run, proceed: Callable[[], None]) -> None:
    run.deadline = JobDeadline(run.task, run.request, run.job.provider, run.job.model)
    run.deadline.run(proceed)
