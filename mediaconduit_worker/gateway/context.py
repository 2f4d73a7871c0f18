"""What every request handler of one gateway shares: its settings and its Redis, made by ``create_app``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from ..settings import Settings
from .problems import Problem
from .tenants import KeyStore, Redis, Tenant

if TYPE_CHECKING:
    import redis.asyncio as aioredis

STREAM_READ_MARGIN = 10.0
"""Seconds a stream's Redis reply may take past its ``XREAD BLOCK`` before the connection is taken for dead."""


@dataclass
class Gateway:
    """One app's settings and clients (``request.app.state.gateway``). Redis is reached on first use."""

    settings: Settings
    redis: Redis
    """The state Redis (the result backend's): keys, jobs, files, limits."""
    broker: Redis
    """The broker's Redis: queue positions."""
    keys: KeyStore
    scripts: dict[str, Any] = field(default_factory=dict)
    """Lua scripts registered on first use, by name."""
    stream_client: aioredis.Redis | None = None
    """The asyncio client of the state Redis that event streams wait on (``streams()``)."""

    def streams(self) -> aioredis.Redis:
        """The asyncio client event streams wait on, made on first use in the server's event loop; its
        connections are named ``mediaconduit-gateway-events-<pid>`` (``CLIENT LIST`` shows who waits), at most
        ``MEDIACONDUIT_GATEWAY_EVENTS_MAX_STREAMS`` of them. Their read timeout outlasts an ``XREAD BLOCK`` of
        a keep-alive (redis-py's default of 5 s would cut a longer one and retry it)."""
        if self.stream_client is None:
            from ..worker.redis_state import async_client_for

            self.stream_client = async_client_for(self.settings.effective_result_backend,
                                                  client_name=f"mediaconduit-gateway-events-{os.getpid()}",
                                                  max_connections=self.settings.gateway_events_max_streams,
                                                  socket_timeout=self.settings.gateway_events_keepalive + STREAM_READ_MARGIN)
        return self.stream_client

    def limit_rate(self, tenant: Tenant) -> None:
        """Count a job against the tenant's rpm (the shared rate windows of ``worker/limits.py``); 429 over it."""
        if tenant.rpm is None:
            return
        from ..worker.limits import RoutingState

        state = self.scripts.get("routing")
        if state is None:
            state = self.scripts["routing"] = RoutingState(self.redis)
        denied = state.count_request(f"tenant:{tenant.name}", tenant.rpm)
        if denied is not None:
            wait = max(math.ceil(denied.wait), 1)
            raise Problem(429, "rate-limited", "Too many jobs",
                          f"tenant {tenant.name!r} may create {tenant.rpm} jobs a minute; try again in {wait} s",
                          headers={"Retry-After": str(wait)}, field="rpm", value=tenant.rpm)


def gateway_of(request: Request) -> Gateway:
    """The ``Gateway`` of the app serving ``request`` (a FastAPI dependency)."""
    gw: Gateway = request.app.state.gateway
    return gw
