"""Step: the provider's model runs, directly or through a route's candidates (``worker/calls.py``,
``worker/failover.py``); a batch's budget is held around the call."""

from __future__ import annotations

from collections.abc import Callable

from ..calls import serve_direct
from ..failover import RouteRun
from ..routes import route_for
from .run import Run


def serve(run: Run, proceed: Callable[[], None]) -> None:
    job = run.job
    batch = job.execution.batch
    if job.routed:
        asked = {"capability": job.execution.capability.value} if job.execution.capability else None
        run.served = RouteRun(route_for(job.provider, job.model, asked), job.input, job.options, batch).serve()
    else:
        assert job.model is not None  # Job.parse refuses a direct job without one
        run.served = serve_direct(job.provider, job.model, job.input, job.options, batch)
    proceed()
