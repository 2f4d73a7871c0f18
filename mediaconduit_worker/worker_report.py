"""What a worker has loaded, for ``mediaconduit status``: a remote-control command answered by the
worker's main process.

Providers are loaded in the pool's child processes, which the main process cannot see into, so each
child records what it loaded in a Redis hash per worker node (after each transform, only when
something new was loaded); the ``mediaconduit_info`` inspect command reads it back together with the
Docker services of this installation.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from celery import signals
from celery.worker.control import inspect_command

from .celery_app import TRANSFORM_TASK, app

log = logging.getLogger(__name__)
KEY_PREFIX = "mediaconduit-providers-"
KEY_TTL = 7 * 24 * 3600
_reported: set[str] = set()


def _client() -> Any:
    """The result backend's Redis client (None for a backend without one)."""
    return getattr(app.backend, "client", None)


def providers_key(hostname: str) -> str:
    return KEY_PREFIX + hostname


@signals.worker_ready.connect
def _forget_previous_instance(sender: Any = None, **_: Any) -> None:
    """A node name reused by a new worker process starts with nothing loaded."""
    client = _client()
    if client is not None and sender is not None:
        try:
            client.delete(providers_key(sender.hostname))
        except Exception as exc:  # a report is not worth failing a worker start
            log.warning("could not reset the provider report: %s", exc)


@signals.task_postrun.connect
def _report_loaded(sender: Any = None, task: Any = None, **_: Any) -> None:
    """Child side: add providers this process loaded since its last report."""
    if task is None or task.name != TRANSFORM_TASK:
        return
    from .registry import get_registry

    new = [lp for lp in get_registry().loaded() if lp.checkout.source.url not in _reported]
    client = _client()
    if not new or client is None:
        return
    key = providers_key(task.request.hostname or "unknown")
    try:
        with client.pipeline(transaction=False) as pipe:
            for lp in new:
                info = {"id": lp.manifest.id, "name": lp.manifest.name, "url": lp.checkout.source.url,
                        "commit": lp.checkout.commit, "pid": os.getpid(), "loaded_at": time.time()}
                pipe.hset(key, f"{lp.checkout.source.url}|{os.getpid()}", json.dumps(info))
            pipe.expire(key, KEY_TTL)
            pipe.execute()
    except Exception as exc:
        log.warning("could not report loaded providers: %s", exc)
        return
    _reported.update(lp.checkout.source.url for lp in new)


def loaded_providers(hostname: str) -> list[dict[str, Any]]:
    """Providers loaded on ``hostname``, one entry per provider with the child pids that hold it."""
    client = _client()
    if client is None:
        return []
    merged: dict[str, dict[str, Any]] = {}
    for raw in client.hgetall(providers_key(hostname)).values():
        info = json.loads(raw)
        entry = merged.setdefault(info["url"], {**info, "pids": []})
        entry["pids"].append(info["pid"])
        entry.pop("pid", None)
    return sorted(merged.values(), key=lambda e: e["id"])


def running_services() -> dict[str, Any]:
    """This installation's service containers, or why they cannot be listed (no services module, no Docker)."""
    try:
        from . import services
    except ImportError:
        return {"available": False, "reason": "mediaconduit_worker.services is not installed", "containers": []}
    try:
        containers = services.get_service_registry().managed()
        return {"available": True, "containers": [services.describe(c) for c in containers]}
    except Exception as exc:
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}", "containers": []}


@inspect_command(name="mediaconduit_info")
def mediaconduit_info(state: Any, **_: Any) -> dict[str, Any]:
    """Remote control: this worker's loaded providers and running services."""
    hostname = state.consumer.hostname
    return {"providers": loaded_providers(hostname), "services": running_services(), "pid": os.getpid()}
