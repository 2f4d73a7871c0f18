"""A gateway job in Redis, and its status as the API names it, read from Celery's result backend.

A job is one step or a chain of steps; the gateway assigns every step's task id. The job's id is its
last step's task id (where its result ends up). Redis keys (``docs/http.md``), kept as long as results
(``MEDIACONDUIT_RESULT_EXPIRES``):
- ``mediaconduit:gateway:job:<id>``: hash ``{tenant, created, steps (JSON task ids), queue, provider, model}``;
- ``mediaconduit:gateway:tenant:<name>:jobs``: sorted set of the tenant's job ids, scored by creation (ms).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .tenants import PREFIX, Redis

#: The API's statuses. Celery's PENDING, RECEIVED and RETRY are ``queued``, STARTED ``running``, SUCCESS
#: ``succeeded``, FAILURE ``failed``, and REVOKED ``canceled`` or ``expired`` (its stored revoke says which).
STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "expired")
FINISHED = frozenset({"succeeded", "failed", "canceled", "expired"})


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def jobs_index(tenant: str) -> str:
    return f"{PREFIX}:tenant:{tenant}:jobs"


@dataclass
class JobRecord:
    """What the gateway stored when it created a job."""

    id: str
    tenant: str
    created: float
    steps: list[str]
    queue: str
    provider: str
    model: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, client: Redis, ttl: int) -> None:
        fields = {"tenant": self.tenant, "created": repr(self.created), "steps": json.dumps(self.steps),
                  "queue": self.queue, "provider": self.provider, "model": self.model or "",
                  "extra": json.dumps(self.extra)}
        now_ms = int(self.created * 1000)
        with client.pipeline() as pipe:
            pipe.hset(job_key(self.id), mapping=fields)
            pipe.expire(job_key(self.id), ttl)
            pipe.zadd(jobs_index(self.tenant), {self.id: now_ms})
            pipe.zremrangebyscore(jobs_index(self.tenant), "-inf", now_ms - ttl * 1000)
            pipe.expire(jobs_index(self.tenant), ttl)
            pipe.execute()

    def delete(self, client: Redis) -> None:
        with client.pipeline() as pipe:
            pipe.delete(job_key(self.id))
            pipe.zrem(jobs_index(self.tenant), self.id)
            pipe.execute()

    @classmethod
    def load(cls, client: Redis, job_id: str) -> JobRecord | None:
        return cls.from_hash(job_id, client.hgetall(job_key(job_id)))

    @classmethod
    def from_hash(cls, job_id: str, data: dict[str, str]) -> JobRecord | None:
        """The record of the hash at ``job_key(job_id)`` (None when empty: no such job, or expired)."""
        if not data:
            return None
        return cls(job_id, data["tenant"], float(data["created"]), json.loads(data["steps"]), data["queue"],
                   data["provider"], data.get("model") or None, json.loads(data.get("extra") or "{}"))


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def step_status(meta: dict[str, Any]) -> str:
    state = meta.get("status", "PENDING")
    if state == "SUCCESS":
        return "succeeded"
    if state == "FAILURE":
        return "failed"
    if state == "REVOKED":
        revoked = meta.get("revoked") or {}
        return "expired" if revoked.get("state") == "EXPIRED" else "canceled"
    if state == "STARTED":
        return "running"
    return "queued"


def _error(meta: dict[str, Any]) -> dict[str, Any]:
    """The step's error: the backend hands it back as the exception Celery rebuilt (its class named as
    the worker's), or, for a revoke, Celery's ``TaskRevokedError``."""
    result = meta.get("result")
    if isinstance(result, BaseException):
        return {"type": type(result).__name__, "message": str(result)}
    return {"type": None, "message": str(result)}


def _cost(result: Any) -> float | None:
    if not isinstance(result, dict):
        return None
    cost = ((result.get("asset") or {}).get("metadata") or {}).get("cost")
    usd = cost.get("usd") if isinstance(cost, dict) else None
    return float(usd) if isinstance(usd, int | float) else None


def job_view(record: JobRecord, metas: list[dict[str, Any]], base_url: str,
             position: int | None = None) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` returns it, from its record and its steps' result metas."""
    statuses = [step_status(m) for m in metas]
    status = "queued"
    error = None
    for s, meta in zip(statuses, metas):
        if s in ("failed", "canceled", "expired"):
            status, error = s, _error(meta)
            break
    else:
        if statuses[-1] == "succeeded":
            status = "succeeded"
        elif any(s in ("running", "succeeded") for s in statuses):
            status = "running"
    costs = [_cost(m.get("result")) for m in metas if m.get("status") == "SUCCESS"]
    priced = [c for c in costs if c is not None]
    steps = []
    for task_id, s, meta in zip(record.steps, statuses, metas):
        result = meta.get("result") if s == "succeeded" else None
        attempts = ((result or {}).get("metadata") or {}).get("attempts") if isinstance(result, dict) else None
        steps.append({"task_id": task_id, "status": s, "retries": int(meta.get("retries") or 0),
                      "worker": meta.get("worker"), "completed_at": _iso(meta.get("date_done")) if s in FINISHED else None,
                      "attempts": attempts})
    last = metas[-1]
    view: dict[str, Any] = {
        "id": record.id,
        "status": status,
        "provider": record.provider,
        "model": record.model,
        "created_at": datetime.fromtimestamp(record.created, UTC).isoformat(),
        "completed_at": _iso(next((m.get("date_done") for m, s in zip(metas, statuses) if s in FINISHED and s != "succeeded"),
                                  last.get("date_done") if status == "succeeded" else None)),
        "queue_position": position if status == "queued" else None,
        "result": last.get("result") if status == "succeeded" else None,
        "error": error,
        "cost_usd": sum(priced) if priced else None,
        "attempts": sum(1 + int(meta.get("retries") or 0) for meta in metas),
        "steps": steps,
        "urls": {"get": f"{base_url}v1/jobs/{record.id}", "cancel": f"{base_url}v1/jobs/{record.id}/cancel",
                 "events": f"{base_url}v1/jobs/{record.id}/events"},
    }
    return view


def now() -> float:
    return time.time()
