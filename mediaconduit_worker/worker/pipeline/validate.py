"""Step: the message becomes a ``Job``, checked once; a bad one fails naming the culprit."""

from __future__ import annotations

from collections.abc import Callable

from ..headers import BATCH_HEADER
from ..signing import verified_batch
from .job import Job
from .run import Run


def validate(run: Run, proceed: Callable[[], None]) -> None:
    header = getattr(run.request, BATCH_HEADER, None)
    # Checked before anything is charged; a job in no batch makes no call for it.
    batch = None if header is None else verified_batch(header, run.request.id)
    run.job = Job.parse(run.args, run.request, batch=batch)
    proceed()
