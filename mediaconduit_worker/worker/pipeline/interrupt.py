"""Step: a job interrupted mid-call (``deadlines.JobInterrupted``: a cancel, or a worker shutting down that
hands it back) ends as that means: REVOKED, or back in the queue at once (``revokes.interrupted``)."""

from __future__ import annotations

from collections.abc import Callable

from ..deadlines import JobInterrupted
from ..revokes import interrupted
from .run import Run


def stop_when_interrupted(run: Run, proceed: Callable[[], None]) -> None:
    try:
        proceed()
    except JobInterrupted:
        raise interrupted(run.task) from None
