"""Step: an identical job of a deterministic model is answered from the result cache (``worker/cache.py``)
without a provider call; a job that computes a cacheable result stores it for the next."""

from __future__ import annotations

from collections.abc import Callable

from .. import cache as result_cache
from ..events import has_reader
from ..loader import LoadedProvider, get_registry
from .run import Run


def _cacheable(run: Run) -> LoadedProvider | None:
    """The loaded provider when this job is cached: its ``cache`` execution option decides if given, else
    the model's manifest entry. A route's jobs are not cached: which candidate serves is decided per job."""
    job = run.job
    if job.execution.cache is False or job.routed or job.model is None:
        return None
    registry = get_registry()
    loaded = registry.peek(job.provider) or registry.get(job.provider)  # the job needs it loaded anyway
    return loaded if job.execution.cache or loaded.manifest.model_cached(job.model) else None


def answer_from_cache(run: Run, proceed: Callable[[], None]) -> None:
    loaded = _cacheable(run)
    if loaded is None:
        proceed()
        return
    job = run.job
    hit = result_cache.lookup(run.request, run.deadline, loaded, job.model or "", job.options,
                              job.input, run.started)
    if hit is not None:
        run.result = hit
        if has_reader(run.request):  # its output replayed as one chunk
            from ..chunks import ChunkWriter

            asset = hit.get("asset") or {}
            ChunkWriter(job.task_id, run.secrets).finish(asset.get("content") if asset.get("type") == "text" else None)
        return
    key = result_cache.claimed_key(job.task_id)
    if key is not None:
        run.record.note(cache={"hit": False, "key": key})
    proceed()
    if run.result is not None:
        run.result = result_cache.store(job.task_id, run.result)
