"""``/v1/jobs``: create, read, list and cancel a tenant's jobs.

A tenant sees only its own jobs: another tenant's id answers 404, as an id that never existed does.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from ..worker.events import stream_key
from .auth import tenant
from .context import Gateway, gateway_of
from .files import grant_outputs
from .problems import Problem, invalid, not_found
from .records import FINISHED, STATUSES, JobRecord, job_view, jobs_index
from .schemas import JobIn, JobList, JobOut
from .submit import create, existing_job
from .tenants import Tenant

router = APIRouter(tags=["jobs"])
MAX_WAIT = 60.0
"""Longest ``Prefer: wait=N`` held, in seconds (a longer N is held this long)."""
HELD_BATCH = 500
"""Event entries a held request reads at once before it looks at the job again (a streaming job writes many)."""
PAGE_MAX = 100


def _metas(record: JobRecord) -> list[dict[str, Any]]:
    from ..worker.app import app

    return [app.backend.get_task_meta(task_id) for task_id in record.steps]


def queue_position(gw: Gateway, record: JobRecord) -> int:
    """1-based place of the job's first step in its queue (0: not in it, so a worker holds it, about to
    start). Read by one script that scans the queue from its consuming end (``lua/queue_position.lua``)."""
    from ..worker.lua_scripts import named, register

    script = gw.scripts.get("queue_position") or gw.scripts.setdefault("queue_position", register(gw.broker, "queue_position"))
    return int(script(keys=[record.queue], args=[named(needle=record.steps[0], chunk=500)]))


def view(gw: Gateway, record: JobRecord, request: Request) -> dict[str, Any]:
    metas = _metas(record)
    out = job_view(record, metas, str(request.base_url))
    if out["status"] == "queued":
        out["queue_position"] = queue_position(gw, record)
    elif out["status"] == "succeeded":
        grant_outputs(gw, record.tenant, out["result"])
    return out


def own_job(gw: Gateway, who: Tenant, job_id: str) -> JobRecord:
    record = JobRecord.load(gw.redis, job_id) if len(job_id) <= 64 else None
    if record is None or record.tenant != who.name:
        raise not_found("job", job_id)
    return record


def _wait_seconds(prefer: str | None) -> float | None:
    """N of ``Prefer: wait=N`` (RFC 7240), or None."""
    for part in (prefer or "").replace(";", ",").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                raise invalid("Prefer", prefer, "wait=N needs N in seconds", status=400) from None
            if seconds < 0:
                raise invalid("Prefer", prefer, "wait=N needs N of 0 or more seconds", status=400)
            return min(seconds, MAX_WAIT)
    return None


def _held(gw: Gateway, record: JobRecord, request: Request, seconds: float) -> dict[str, Any]:
    """The job once finished, or as it is after ``seconds``: looked at again as soon as one of its steps'
    event streams gets an entry (every gateway job writes them, a final status after its stored result),
    and at least once a second."""
    deadline = time.monotonic() + seconds
    cursors = {stream_key(step): "0-0" for step in record.steps}
    while True:
        out = view(gw, record, request)
        left = deadline - time.monotonic()
        if out["status"] in FINISHED or left <= 0:
            return out
        replies = gw.redis.xread(cursors, count=HELD_BATCH, block=max(1, int(min(left, 1.0) * 1000)))
        for key, entries in replies or ():
            cursors[key] = entries[-1][0]


@router.post("/v1/jobs", operation_id="createJob", status_code=201, response_model=JobOut, summary="Create a job",
             responses={200: {"description": "An Idempotency-Key seen before: its job", "model": JobOut}})
def create_job(body: JobIn, request: Request, response: Response, who: Tenant = Depends(tenant),
               idempotency_key: str | None = Header(None, max_length=255),
               prefer: str | None = Header(None)) -> dict[str, Any]:
    gw = gateway_of(request)
    wait = _wait_seconds(prefer)
    from .submit import body_digest

    if idempotency_key is not None and (job_id := existing_job(gw, who, idempotency_key, body_digest(body))):
        record = own_job(gw, who, job_id)
        response.status_code = 200
        warnings: list[str] = []
    else:
        gw.limit_rate(who)
        record, warnings = create(gw, who, body, idempotency_key, str(request.base_url))
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={wait:g}"
        out = _held(gw, record, request, wait)
    else:
        out = view(gw, record, request)
    response.headers["Location"] = out["urls"]["get"]
    return {**out, "warnings": warnings}


@router.get("/v1/jobs/{job_id}", operation_id="getJob", response_model=JobOut, summary="Read a job")
def get_job(job_id: str, request: Request, response: Response, who: Tenant = Depends(tenant),
            prefer: str | None = Header(None)) -> dict[str, Any]:
    gw = gateway_of(request)
    record = own_job(gw, who, job_id)
    wait = _wait_seconds(prefer)
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={wait:g}"
        return _held(gw, record, request, wait)
    return view(gw, record, request)


@router.get("/v1/jobs", operation_id="listJobs", response_model=JobList, summary="List the tenant's jobs, newest first")
def list_jobs(request: Request, who: Tenant = Depends(tenant),
              status: list[str] | None = Query(None, description="Only jobs in these statuses."),
              limit: int = Query(20, ge=1, le=PAGE_MAX),
              cursor: str | None = Query(None, description="From the previous page's `next`.")) -> dict[str, Any]:
    found, following = listing(gateway_of(request), who, request, status, limit, cursor)
    next_url = None
    if following is not None:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
        query.append(("cursor", following))
        next_url = f"{request.base_url}v1/jobs?{urlencode(query)}"
    return {"jobs": found, "next": next_url}


def listing(gw: Gateway, who: Tenant, request: Request, status: list[str] | None, limit: int,
            cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the tenant's jobs, newest first, as ``view`` shows each, and the cursor of the next page
    (None: this is the last); for ``GET /v1/jobs`` and the job list page (``pages.py``)."""
    for s in status or []:
        if s not in STATUSES:
            raise invalid("status", s, f"status must be one of {', '.join(STATUSES)}", status=422)
    score, _, after = (cursor or "").partition(":")
    try:
        top = int(score) if cursor else None
    except ValueError:
        raise invalid("cursor", cursor, "cursor must be the `next` of a previous page", status=422) from None
    found: list[dict[str, Any]] = []
    last: tuple[int, str] | None = None
    more = False
    offset = 0
    while not more:
        chunk = gw.redis.zrevrangebyscore(jobs_index(who.name), "+inf" if top is None else top, "-inf",
                                          start=offset, num=max(limit * 2, 20), withscores=True)
        if not chunk:
            break
        offset += len(chunk)
        for job_id, at in chunk:
            if top is not None and int(at) == top and after and job_id >= after:
                continue  # shown on an earlier page (equal scores come in reverse order of id)
            record = JobRecord.load(gw.redis, job_id)
            if record is None:
                continue
            out = view(gw, record, request)
            if status and out["status"] not in status:
                continue
            if len(found) == limit:
                more = True
                break
            found.append(out)
            last = (int(at), job_id)
    return found, f"{last[0]}:{last[1]}" if more and last is not None else None


@router.post("/v1/jobs/{job_id}/cancel", operation_id="cancelJob", response_model=JobOut, summary="Cancel a job, queued or running",
             responses={409: {"description": "The job had already finished"}})
def cancel_job(job_id: str, request: Request, who: Tenant = Depends(tenant)) -> dict[str, Any]:
    gw = gateway_of(request)
    record = own_job(gw, who, job_id)
    out = view(gw, record, request)
    if out["status"] in FINISHED:
        raise Problem(409, "finished", "Job finished", f"job {job_id} has {out['status']} already; nothing to cancel",
                      field="id", value=job_id, job_status=out["status"])
    cancel(record, f"canceled through the HTTP API by tenant {who.name}")
    return view(gw, record, request)


def cancel(record: JobRecord, reason: str) -> None:
    """The sticky revoke of every step (``worker/revokes.py``): a queued step never runs, a running one is
    interrupted, whichever worker holds it and whenever one starts."""
    from ..worker.app import app

    app.control.revoke(record.steps, reason=reason)
