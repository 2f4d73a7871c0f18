"""Step: the provider's model runs, directly or through a route's candidates (``worker/calls.py``,
``worker/failover.py``); a batch's budget is held around the call. When the job's stream has a reader, a
model that can stream writes its chunks there as it goes (``worker/chunks.py``)."""

from __future__ import annotations

from collections.abc import Callable

from ...assets import Text
from ..calls import serve_direct
from ..events import has_reader
from ..failover import RouteRun
from ..routes import route_for
from .run import Run


def serve(run: Run, proceed: Callable[[], None]) -> None:
    job = run.job
    batch = job.execution.batch
    chunks = None
    if has_reader(run.request):
        from ..chunks import ChunkWriter  # only a job with a reader loads the writer

        chunks = ChunkWriter(job.task_id, run.secrets)
    if job.routed:
        asked = {"capability": job.execution.capability.value} if job.execution.capability else None
        run.served = RouteRun(route_for(job.provider, job.model, asked), job.input, job.options, batch, chunks).serve()
    else:
        assert job.model is not None  # Job.parse refuses a direct job without one
        run.served = serve_direct(job.provider, job.model, job.input, job.options, batch, chunks)
    if chunks is not None:
        output = run.served.output
        chunks.finish(output.content if isinstance(output, Text) else None)
    proceed()
