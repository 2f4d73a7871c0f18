"""Webhooks: where a job's webhook may point, how a delivery is signed, and what failed for good.

A webhook URL is a request the gateway makes on a tenant's behalf, so it passes the input URLs' guard
(``fetch.py``): under a prefix of ``MEDIACONDUIT_WEBHOOK_ALLOW`` (scheme, host, port, whole decoded path
segments), and never to a loopback, private, link-local, metadata or otherwise non-public address, unless
an allow-list prefix names that very address and port (``http://127.0.0.1:9000/``). The address check is
made at submit (an address in the URL, or what its name resolves to then) and again at every send, on the
addresses the name resolves to at that moment, and the connection goes to the address checked.

A delivery is signed per Standard Webhooks: ``webhook-signature: v1,<base64 HMAC-SHA256 of
"<webhook-id>.<webhook-timestamp>.<body>">`` keyed with the tenant's ``whsec_`` secret (``tenants.py``).
Deliveries that failed for good (a 4xx answer other than 408 and 429, the retry horizon passed, an address
refused at send time) are kept per tenant, newest first, and listed at ``GET /v1/webhooks/failures``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from ..fetch import Locator, URLRefused, address_refusal, checked_url, parse_prefixes
from ..settings import Settings
from .auth import tenant
from .context import gateway_of
from .problems import Problem
from .tenants import SECRET_PREFIX, Tenant

router = APIRouter(tags=["webhooks"])
SETTING = "MEDIACONDUIT_WEBHOOK_ALLOW"
FAILURES_KEPT = 1000
"""Failed deliveries kept per tenant (the oldest go first)."""


def failures_key(tenant_name: str) -> str:
    return f"mediaconduit:webhooks:failed:{tenant_name}"


def prefixes(settings: Settings) -> tuple[Locator, ...]:
    return parse_prefixes(settings.webhook_allow or "", SETTING)


def named_addresses(allowed: tuple[Locator, ...]) -> frozenset[tuple[str, int]]:
    """The (address, port) pairs an allow-list prefix names by its IP address: those alone may be non-public."""
    named = set()
    for _scheme, host, port, _path in allowed:
        try:
            named.add((str(ipaddress.ip_address(host)), port))
        except ValueError:
            continue
    return frozenset(named)


def address_refused(address: str, port: int, named: frozenset[tuple[str, int]]) -> str | None:
    """Why a webhook may not be sent to ``address``:``port`` (``"loopback"`` …), or None."""
    ip = str(ipaddress.ip_address(address.split("%", 1)[0]))
    return None if (ip, port) in named else address_refusal(address)


def check_url(url: str, settings: Settings, resolve: bool = True) -> tuple[str, int]:
    """The host and port of a webhook ``url`` that may be called; ``URLRefused`` naming why not. A host name
    that does not resolve now is let through (the send-time check decides)."""
    allowed = prefixes(settings)
    if not allowed:
        raise URLRefused(f"this gateway sends no webhooks: {SETTING} is unset")
    parsed = checked_url(url, allowed, SETTING, "webhook URLs")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    named = named_addresses(allowed)
    try:
        addresses = [str(ipaddress.ip_address(parsed.host))]
    except ValueError:
        addresses = _resolved(parsed.host, port) if resolve else []
    for address in addresses:
        reason = address_refused(address, port, named)
        if reason:
            shown = parsed.host if parsed.host == address else f"{parsed.host} (resolves to {address})"
            raise URLRefused(f"{shown} is not a public address ({reason}) and no {SETTING} prefix names it")
    return parsed.host, port


def _resolved(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refused_problem(url: str, exc: URLRefused) -> Problem:
    return Problem(422, "webhook-refused", "Webhook URL refused", f"/webhook: {exc}", field="/webhook", value=url)


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header of one delivery (Standard Webhooks' ``v1``)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def record_failure(pipe: Any, tenant_name: str, failure: dict[str, Any], ttl: int) -> None:
    """Keep a delivery that failed for good where its tenant (the API) and the operator (Redis) see it; queued
    on ``pipe`` (a Redis pipeline), to be written with the rest of the delivery's fate."""
    key = failures_key(tenant_name)
    pipe.lpush(key, json.dumps(failure, separators=(",", ":")))
    pipe.ltrim(key, 0, FAILURES_KEPT - 1)
    pipe.expire(key, ttl)


@router.get("/v1/webhooks/failures", operation_id="listWebhookFailures",
            summary="The tenant's webhook deliveries that failed for good, newest first")
def list_failures(request: Request, who: Tenant = Depends(tenant),
                  limit: int = Query(100, ge=1, le=FAILURES_KEPT)) -> dict[str, Any]:
    gw = gateway_of(request)
    return {"failures": [json.loads(item) for item in gw.redis.lrange(failures_key(who.name), 0, limit - 1)]}
