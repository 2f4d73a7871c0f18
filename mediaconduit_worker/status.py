"""The health view behind ``mediaconduit status``: every live worker, its queues, providers and services."""

from __future__ import annotations

from typing import Any

from celery import Celery


def cluster_status(app: Celery, timeout: float = 2.0) -> list[dict[str, Any]]:
    """One entry per worker that answered: queues, concurrency, active jobs, providers, services."""
    inspect = app.control.inspect(timeout=timeout)
    queues = inspect.active_queues() or {}
    stats = inspect.stats() or {}
    active = inspect.active() or {}
    try:
        info = app.control.broadcast("mediaconduit_info", reply=True, timeout=timeout) or []
    except Exception:  # older workers without the command
        info = []
    infos = {name: reply for item in info for name, reply in item.items()}
    workers = []
    for name in sorted(set(queues) | set(stats)):
        st = stats.get(name, {})
        detail = infos.get(name) or {}
        workers.append({
            "worker": name,
            "queues": sorted(q["name"] for q in queues.get(name, [])),
            "concurrency": (st.get("pool") or {}).get("max-concurrency"),
            "processes": (st.get("pool") or {}).get("processes", []),
            "active": len(active.get(name, [])),
            "providers": detail.get("providers", []) if "error" not in detail else [],
            "services": detail.get("services") if detail else {"available": False, "reason": "no reply", "containers": []},
        })
    return workers
