"""Step: what the job is, for its log lines and, with tracing on, its span (``worker/tracing.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...redaction import scrub
from .. import tracing
from ..headers import TENANT_HEADER
from ..logformat import job_labels
from ..routes import ROUTE_PREFIX
from .run import Run


def observe(run: Run, proceed: Callable[[], None]) -> None:
    job, request = run.job, run.request
    labels = {"task_id": job.task_id, "provider": scrub(job.provider, run.secrets), "model": job.model,
              "route": job.provider.removeprefix(ROUTE_PREFIX) if job.routed else None,
              "tenant": getattr(request, TENANT_HEADER, None)}
    token = job_labels.set(labels)
    try:
        if tracing.tracer() is None:
            proceed()
            return
        capability = (getattr(request, "delivery_info", None) or {}).get("routing_key") or "transform"
        attributes = {"gen_ai.request.model": job.model or "", "mediaconduit.route": labels["route"] or "",
                      "mediaconduit.tenant": labels["tenant"] or "", "mediaconduit.delivery": (request.retries or 0) + 1}
        with tracing.consuming(request, capability, attributes) as span:
            try:
                proceed()
            except BaseException as exc:
                tracing.failed(span, exc, run.secrets)
                raise
            _describe(span, run.result or {})
    finally:
        job_labels.reset(token)


def _describe(span: Any, result: dict[str, Any]) -> None:
    """What served, from the record: the provider's manifest id, the model, tokens, the cache's answer."""
    metadata = result.get("metadata") or {}
    prompt = metadata.get("generation_prompt") or {}
    usage = ((result.get("asset") or {}).get("metadata") or {}).get("usage") or {}
    values = {
        "gen_ai.provider.name": prompt.get("provider"),
        "gen_ai.response.model": prompt.get("model_id"),
        "gen_ai.usage.input_tokens": usage.get("prompt_tokens", usage.get("input_tokens")),
        "gen_ai.usage.output_tokens": usage.get("completion_tokens", usage.get("output_tokens")),
        "mediaconduit.cache": None if "cache" not in metadata else "hit" if metadata["cache"].get("hit") else "miss",
        "mediaconduit.attempts": len(metadata.get("attempts") or []) or None,
    }
    span.set_attributes({k: v for k, v in values.items() if isinstance(v, str | int | float) and not isinstance(v, bool)})
