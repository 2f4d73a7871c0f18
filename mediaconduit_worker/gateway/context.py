"""What every request handler of one gateway shares: its settings and its Redis, made by ``create_app``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from ..settings import Settings
from .problems import Problem
from .tenants import KeyStore, Redis, Tenant


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
