"""Prometheus metrics of the gateway (``mediaconduit gateway --metrics-port P``): each request by its route
template, method, status and tenant, its latency, the jobs created per tenant, and the keys refused.

Recorded like a worker's (``worker/metrics/multiproc.py``): every process of ``--workers N`` writes to one
directory, and the command serves their sum from one port. The middleware ``Measured`` is added by
``create_app`` only when this process records metrics, so a gateway without them runs none of this code.
Label values are bounded: a route is the template the request matched (``/v1/jobs/{job_id}``, never the
path it was sent to; ``unmatched`` for any path the API does not have), a tenant a name the operator
created (empty for a caller without a valid key), a status an HTTP status code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import AUTH_FAILURE_KEY, TENANT_KEY

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a read from Redis to a held ``Prefer: wait`` or a large upload."""
UNMATCHED = "unmatched"
"""The route of a request whose path no route of the API matched (a 404 or a body refused before routing)."""
AUTH_REASONS = ("missing", "unknown", "guessing")
"""Why a key was refused: none sent, unknown or revoked, or the address sent too many bad ones (429)."""

requests = Counter("mediaconduit_gateway_requests", "HTTP requests answered, by route template, method, status and "
                   "tenant (empty without a valid key).", ("route", "method", "status", "tenant"), registry=None)
request_seconds = Histogram("mediaconduit_gateway_request_duration_seconds", "Seconds from a request's arrival to "
                            "the end of its answer, by route template and method.", ("route", "method"),
                            buckets=REQUEST_BUCKETS, registry=None)
jobs_created = Counter("mediaconduit_gateway_jobs_created", "Jobs created through POST /v1/jobs (an Idempotency-Key "
                       "seen before creates none), by tenant.", ("tenant",), registry=None)
auth_failures = Counter("mediaconduit_gateway_auth_failures", "Requests refused for their key, by reason (missing, "
                        "unknown, guessing).", ("reason",), registry=None)

RECORDED: tuple[MetricWrapperBase, ...] = (requests, request_seconds, jobs_created, auth_failures)
"""Every series of the gateway."""


def route_of(scope: Scope) -> str:
    """The template of the route that served ``scope`` (set in the scope by FastAPI's router)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class Measured:
    """Records each HTTP request once its answer is sent (or its handler raised: a 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})  # the dict ``request.state`` writes into
        status = 500

        async def sent(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route, method = route_of(scope), scope["method"]
            tenant = state.get(TENANT_KEY, "")
            requests.labels(route, method, str(status), tenant).inc()
            request_seconds.labels(route, method).observe(time.perf_counter() - start)
            if route == "/v1/jobs" and method == "POST" and status == 201:
                jobs_created.labels(tenant).inc()
            reason = state.get(AUTH_FAILURE_KEY)
            if reason in AUTH_REASONS:
                auth_failures.labels(reason).inc()


_serving: dict[int, Any] = {}


def serve(port: int, address: str, path: Path) -> None:
    """Serve the series the gateway's processes record in ``path`` on ``address:port``, from a daemon thread
    of this process (once per port)."""
    if port in _serving:
        return
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, str(path))  # counters and histograms only: nothing a dead process leaves live
    server, _thread = start_http_server(port, address, registry=registry)
    _serving[port] = server
