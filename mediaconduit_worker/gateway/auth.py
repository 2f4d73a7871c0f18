"""``Authorization: Bearer KEY`` on every call, and a brake on guessing keys.

A client address that sent ``MEDIACONDUIT_GATEWAY_AUTH_FAILURES`` bad keys within a minute gets 429 for
the rest of that minute, before its key is even looked at, so a key cannot be found by trying: the count
is in Redis, shared by every gateway behind a load balancer. The caller's tenant, or why it was refused,
is left in the request's state for the metrics (``metrics.Measured``).
"""

from __future__ import annotations

from fastapi import Request

from .context import Gateway, gateway_of
from .problems import Problem
from .tenants import Tenant

FAILURE_WINDOW = 60
"""Seconds over which failed keys of one client address are counted."""
TENANT_KEY = "mediaconduit_tenant"
"""The request state's key (``scope["state"]``) holding the caller's tenant name."""
AUTH_FAILURE_KEY = "mediaconduit_auth_failure"
"""The request state's key holding why the caller's key was refused: missing, unknown or guessing."""


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail, field="Authorization", value=None,
                   headers={"WWW-Authenticate": 'Bearer realm="mediaconduit"'})


def _failures_key(request: Request) -> str:
    host = request.client.host if request.client else "unknown"
    return f"mediaconduit:gateway:authfail:{host}"


def refuse_if_guessing(gw: Gateway, request: Request) -> None:
    """429 for an address that sent too many bad keys in the window (the API's and the login form's alike)."""
    count = gw.redis.get(_failures_key(request))
    if count is not None and int(count) >= gw.settings.gateway_auth_failures:
        setattr(request.state, AUTH_FAILURE_KEY, "guessing")
        wait = max(int(gw.redis.ttl(_failures_key(request))), 1)
        raise Problem(429, "too-many-failed-keys", "Too many failed keys",
                      f"{int(count)} bad keys from this address within {FAILURE_WINDOW} s; try again in {wait} s",
                      headers={"Retry-After": str(wait)})


def count_failure(gw: Gateway, request: Request) -> None:
    """One more bad key from the request's address."""
    with gw.redis.pipeline() as pipe:
        pipe.set(_failures_key(request), 0, ex=FAILURE_WINDOW, nx=True)  # the window starts at the first failure
        pipe.incr(_failures_key(request))
        pipe.execute()


def tenant(request: Request) -> Tenant:
    """The tenant of the request's bearer key (a FastAPI dependency); 401 without a valid key."""
    gw = gateway_of(request)
    refuse_if_guessing(gw, request)
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        setattr(request.state, AUTH_FAILURE_KEY, "missing")
        raise _unauthorized("send 'Authorization: Bearer KEY' (`mediaconduit keys create --tenant NAME` makes a key)")
    found = gw.keys.lookup(key.strip())
    if found is None:
        count_failure(gw, request)
        setattr(request.state, AUTH_FAILURE_KEY, "unknown")
        raise _unauthorized("the key is unknown or revoked")
    setattr(request.state, TENANT_KEY, found.name)
    return found
