"""What a job records: its queue wait, its outcome, its slot, its cost and tokens, its cache lookup (the
pipeline step ``measure``, outermost), and each provider call it made (``observe_call``, a
``calls.CALL_OBSERVERS`` entry). Both are installed by ``hooks.install`` only in a worker with metrics on."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from celery.exceptions import Ignore, Reject, Retry

from ...models import Model
from ..headers import SENT_HEADER, TENANT_HEADER
from ..loader import LoadedProvider, get_registry
from ..pipeline.run import Run
from . import series

TENANT: ContextVar[str] = ContextVar("mediaconduit_metrics_tenant", default="")
"""The running job's tenant, for the calls it makes (the deadline's companion thread copies the context)."""
TENANT_CHARS = 64
_loaded: set[str] = set()
"""Providers this process has counted in ``providers_loaded``."""


def _started_after(request: Any) -> float | None:
    """When the job could start at the earliest: its enqueue time, or its ETA when later (unix seconds)."""
    sent = getattr(request, SENT_HEADER, None)
    if not isinstance(sent, (int, float)):
        return None
    eta = request.eta
    if eta:
        try:
            return max(float(sent), datetime.fromisoformat(eta).timestamp())
        except (TypeError, ValueError):
            pass
    return float(sent)


def measure(run: Run, proceed: Callable[[], None]) -> None:
    request = run.request
    queue = (request.delivery_info or {}).get("routing_key") or ""
    since = _started_after(request)
    if since is not None:
        series.queue_wait.labels(queue).observe(max(time.time() - since, 0.0))
    tenant = getattr(request, TENANT_HEADER, None)
    tenant = tenant[:TENANT_CHARS] if isinstance(tenant, str) else ""
    token = TENANT.set(tenant)
    busy = series.pool_busy.labels(request.hostname or "")
    busy.inc()
    outcome = "failed"
    try:
        proceed()
        outcome = "succeeded"
    except Retry:
        outcome = "retried"
        raise
    except (Ignore, Reject):
        outcome = "interrupted"
        raise
    finally:
        busy.dec()
        TENANT.reset(token)
        series.jobs.labels(queue, outcome).inc()
    _served(run, tenant)


def _served(run: Run, tenant: str) -> None:
    """The cache lookup, cost and tokens of a job that succeeded, and the provider it loaded."""
    served = run.served
    if served is None:  # answered by the cache: no call made
        job = run.job
        loaded = get_registry().peek(job.provider)
        if loaded is not None:
            series.cache.labels(loaded.manifest.id, job.model or "", "hit").inc()
        return
    provider = served.loaded.manifest.id
    if run.record.metadata.get("cache") is not None:
        series.cache.labels(provider, served.model, "miss").inc()
    if provider not in _loaded:
        _loaded.add(provider)
        series.providers_loaded.labels(run.request.hostname or "", provider).inc()
    metadata = served.output.metadata
    route = served.route or ""
    spent = metadata.get("cost")
    usd = spent.get("usd") if isinstance(spent, dict) and spent.get("currency", "USD") == "USD" else None
    if isinstance(usd, (int, float)) and usd > 0:
        series.cost.labels(route, provider, served.model, tenant).inc(usd)
    usage = metadata.get("usage")
    if isinstance(usage, dict):
        for kind, keys in (("input", ("input_tokens", "prompt_tokens")), ("output", ("output_tokens", "completion_tokens"))):
            count = next((usage[k] for k in keys if isinstance(usage.get(k), int)), None)
            if count:
                series.tokens.labels(route, provider, served.model, tenant, kind).inc(count)


def observe_call(loaded: LoadedProvider, runnable: Model, route: str | None, seconds: float,
                 error: BaseException | None) -> None:
    labels = (loaded.manifest.id, runnable.id, route or "", TENANT.get())
    series.calls.labels(*labels).inc()
    series.call_seconds.labels(*labels).observe(seconds)
    if error is not None:
        status = getattr(error, "status", None)
        series.call_errors.labels(*labels, type(error).__name__, str(status) if isinstance(status, int) else "").inc()
