"""Step: a replayed job's Docker service runs at the commit its record names, for this job only."""

from __future__ import annotations

from collections.abc import Callable

from ..replay import pinned_services
from .run import Run


def pin_service(run: Run, proceed: Callable[[], None]) -> None:
    with pinned_services(run.job.execution.service_commit):
        proceed()
