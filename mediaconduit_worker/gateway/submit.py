"""Creating a job: the tenant's request checked with the producer's own checks, then sent by the
gateway alone, which assigns every task id and sets every message header.

What a request may name is the job's arguments (input, provider or route, model, options) and nothing
else: no Celery option, no header, no task id. Every step passes ``worker/checks.py`` (allow-list,
manifest, declared parameters, capability), then ``TransformTask.apply_async`` and the app's
``send_task`` (JSON only, ``MEDIACONDUIT_MAX_JOB_BYTES``, redacted reprs), as any producer's job does.
Each step carries a batch header signed for its task id (``worker/signing.py``): the worker charges the
step's spend to the tenant's scope and holds its budget there.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from ..errors import InvalidInputError, MediaConduitError, ProviderNotAllowedError, UnknownModelError
from ..worker.events import WEBHOOK_PREFIX
from .context import Gateway
from .problems import Problem, from_error, invalid
from .records import JobRecord, now
from .schemas import JobIn, StepIn
from .tenants import Tenant

BLOB_REF = re.compile(r"blob://sha256/([0-9a-f]{64})")
IDEMPOTENCY_TTL = 24 * 3600
"""Seconds an ``Idempotency-Key`` keeps answering with its job."""
DEADLINES = "mediaconduit:gateway:deadlines"
"""Sorted set of job ids scored by their ``cancel_after`` deadline (epoch seconds)."""


def _provider(step: StepIn, where: str) -> str:
    if (step.provider is None) == (step.route is None):
        raise invalid(f"{where}provider", step.provider, "give exactly one of 'provider' and 'route'")
    if step.route is not None:
        return f"route:{step.route}"
    assert step.provider is not None
    if step.provider.startswith("route:"):
        return step.provider
    from ..sources.allow import allow_list_is_set, check_allowed

    if not allow_list_is_set():
        raise Problem(422, "provider-not-allowed", "Provider not allowed",
                      "this gateway takes no provider URLs: MEDIACONDUIT_PROVIDER_ALLOW is unset (only 'route' jobs)",
                      field=f"{where}provider", value=step.provider)
    try:
        check_allowed(step.provider)
    except ProviderNotAllowedError as exc:
        raise Problem(422, "provider-not-allowed", "Provider not allowed", str(exc), field=f"{where}provider",
                      value=step.provider) from None
    return step.provider


def _refused(exc: MediaConduitError, step: StepIn, where: str, provider: str) -> Problem:
    """The producer's refusal of a step, naming the field it is about."""
    if isinstance(exc, UnknownModelError) or (isinstance(exc, InvalidInputError) and not step.model):
        return from_error(exc, f"{where}model", step.model)
    if isinstance(exc, InvalidInputError):
        return from_error(exc, f"{where}options", step.options)
    return from_error(exc, f"{where}route" if step.route else f"{where}provider", step.route or provider)


def _blobs_in(value: Any) -> set[str]:
    return set(BLOB_REF.findall(json.dumps(value)))


def body_digest(body: JobIn) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def _idempotency_key(tenant: Tenant, key: str) -> str:
    return f"mediaconduit:gateway:idem:{tenant.name}:{hashlib.sha256(key.encode()).hexdigest()}"


def existing_job(gw: Gateway, tenant: Tenant, key: str, digest: str) -> str | None:
    """The job a retried ``Idempotency-Key`` made, or None; a key reused for another body is refused."""
    held = gw.redis.get(_idempotency_key(tenant, key))
    if held is None:
        return None
    job_id, _, was = held.partition(" ")
    if was != digest:
        raise invalid("Idempotency-Key", key, "this Idempotency-Key was used for another request body", status=422)
    return job_id


def create(gw: Gateway, tenant: Tenant, body: JobIn, idempotency_key: str | None = None,
           base_url: str = "/") -> tuple[JobRecord, list[str]]:
    """Check and send ``body`` for ``tenant``; its record and warnings. An ``Idempotency-Key`` seen before
    returns its job (check with ``existing_job`` first; a race between two is settled here). ``base_url``
    is the API's, for the job's URLs in its webhooks."""
    from celery import chain

    from ..worker.app import transform
    from ..worker.checks import check_step
    from ..worker.headers import BATCH_HEADER, EVENTS_HEADER, TENANT_HEADER
    from ..worker.signing import sign_batch_header
    from .files import owns_blob

    steps: list[tuple[StepIn, str]] = [(body, "/")]
    steps += [(s, f"/steps/{k}/") for k, s in enumerate(body.steps)]
    providers = [_provider(step, where) for step, where in steps]
    if body.webhook is not None:
        _check_webhook(gw, body.webhook)
    for digest in sorted(_blobs_in(body.input)):
        if not owns_blob(gw, tenant, digest):
            raise invalid("/input", f"blob://sha256/{digest}", f"no file blob://sha256/{digest} for this key "
                          "(upload it with POST /v1/files)", status=422)
    warnings: list[str] = []
    queue = ""
    for (step, where), provider in zip(steps, providers):
        try:
            checked = check_step(provider, step.model, step.options)
        except MediaConduitError as exc:
            raise _refused(exc, step, where, provider) from None
        warnings += checked.warnings
        queue = queue or checked.queue
    ids = [str(uuid.uuid4()) for _ in steps]
    record = JobRecord(ids[-1], tenant.name, now(), ids, queue, providers[0], body.model,
                       {"deadline": now() + body.cancel_after} if body.cancel_after else {})
    if idempotency_key is not None:
        taken = gw.redis.set(_idempotency_key(tenant, idempotency_key), f"{record.id} {body_digest(body)}",
                             nx=True, ex=IDEMPOTENCY_TTL)
        if not taken:
            raise Problem(409, "idempotency-race", "Idempotency-Key in use",
                          "another request with this Idempotency-Key is being created; retry it",
                          field="Idempotency-Key", value=idempotency_key, headers={"Retry-After": "1"})
    ttl = gw.settings.result_expires
    record.save(gw.redis, ttl)
    try:
        if body.webhook:  # before sending: a worker's first event may come at once
            _store_webhook(gw, tenant, record, body, base_url)
        sigs = []
        for k, ((step, _), provider) in enumerate(zip(steps, providers)):
            args = (body.input, provider, step.model, step.options) if k == 0 else (provider, step.model, step.options)
            options: dict[str, Any] = {"task_id": ids[k], "headers": {
                BATCH_HEADER: sign_batch_header(tenant.spend_scope, tenant.budget_usd, ids[k]),
                EVENTS_HEADER: True, TENANT_HEADER: tenant.name}}
            if body.cancel_after:
                options["expires"] = body.cancel_after
            sigs.append(transform.signature(args, **options))
        (sigs[0] if len(sigs) == 1 else chain(*sigs)).apply_async()
    except Exception as exc:
        _unsent(gw, tenant, record, idempotency_key)
        if isinstance(exc, MediaConduitError):
            raise from_error(exc, "/input", None) from None
        raise
    if body.cancel_after:
        gw.redis.zadd(DEADLINES, {record.id: record.extra["deadline"]})
    return record, warnings


def _unsent(gw: Gateway, tenant: Tenant, record: JobRecord, idempotency_key: str | None) -> None:
    """What a job that could not be sent leaves behind, removed: its record, webhooks and idempotency key."""
    keys = [f"{WEBHOOK_PREFIX}{task_id}" for task_id in record.steps]
    if idempotency_key is not None:
        keys.append(_idempotency_key(tenant, idempotency_key))
    record.delete(gw.redis)
    gw.redis.delete(*keys)


def _check_webhook(gw: Gateway, url: str) -> None:
    """A webhook URL outside ``MEDIACONDUIT_WEBHOOK_ALLOW``, or at a non-public address it does not name: 422."""
    from ..fetch import URLRefused
    from .webhooks import check_url, refused_problem

    try:
        check_url(url, gw.settings)
    except URLRefused as exc:
        raise refused_problem(url, exc) from None


def _store_webhook(gw: Gateway, tenant: Tenant, record: JobRecord, body: JobIn, base_url: str) -> None:
    """``mediaconduit:webhook:<task id>`` of every step (url, events, tenant, job, base URL): the worker's event
    script reads it to put the job's events in the webhook outbox, the dispatcher to send them."""
    events = ",".join(body.webhook_events_filter or ["start", "output", "logs", "completed"])
    with gw.redis.pipeline() as pipe:
        for task_id in record.steps:
            key = f"{WEBHOOK_PREFIX}{task_id}"
            pipe.hset(key, mapping={"url": body.webhook or "", "events": events, "tenant": tenant.name, "job": record.id,
                                    "base": base_url})
            pipe.expire(key, gw.settings.result_expires)
        pipe.execute()
