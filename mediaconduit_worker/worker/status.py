"""The status report behind ``mediaconduit status``: every live worker, its queues, the providers its
processes loaded and the Docker services of this installation.

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
from collections.abc import Callable
from typing import Any

from celery import Celery, signals
from celery.worker.control import inspect_command

from ..redaction import redact_url
from .app import TRANSFORM_TASK
from .redis_state import state_redis

log = logging.getLogger(__name__)
KEY_PREFIX = "mediaconduit-providers-"
KEY_TTL = 7 * 24 * 3600
POOL_NAMES = {"celery.concurrency.prefork": "prefork", "celery.concurrency.thread": "threads",
              "celery.concurrency.gevent": "gevent", "celery.concurrency.solo": "solo",
              "celery.concurrency.eventlet": "eventlet"}
_reported: set[str] = set()


def providers_key(hostname: str) -> str:
    return KEY_PREFIX + hostname


@signals.worker_ready.connect
def _forget_previous_instance(sender: Any = None, **_: Any) -> None:
    """A node name reused by a new worker process starts with nothing loaded."""
    if sender is not None:
        try:
            state_redis().delete(providers_key(sender.hostname))
        except Exception as exc:  # a report is not worth failing a worker start
            log.warning("could not reset the provider report: %s", exc)


@signals.task_postrun.connect
def _report_loaded(sender: Any = None, task: Any = None, **_: Any) -> None:
    """Child side: add providers this process loaded since its last report."""
    if task is None or task.name != TRANSFORM_TASK:
        return
    from .loader import get_registry

    new = [lp for lp in get_registry().loaded() if lp.checkout.source.url not in _reported]
    if not new:
        return
    key = providers_key(task.request.hostname or "unknown")
    try:
        with state_redis().pipeline(transaction=False) as pipe:
            for lp in new:
                url = redact_url(lp.checkout.source.url)
                info = {"id": lp.manifest.id, "name": lp.manifest.name, "url": url,
                        "commit": lp.checkout.commit, "pid": os.getpid(), "loaded_at": time.time()}
                pipe.hset(key, f"{url}|{os.getpid()}", json.dumps(info))
            pipe.expire(key, KEY_TTL)
            pipe.execute()
    except Exception as exc:
        log.warning("could not report loaded providers: %s", exc)
        return
    _reported.update(lp.checkout.source.url for lp in new)


def loaded_providers(hostname: str) -> list[dict[str, Any]]:
    """Providers loaded on ``hostname``, one entry per provider with the child pids that hold it."""
    merged: dict[str, dict[str, Any]] = {}
    for raw in state_redis().hgetall(providers_key(hostname)).values():
        info = json.loads(raw)
        entry = merged.setdefault(info["url"], {**info, "pids": []})
        entry["pids"].append(info["pid"])
        entry.pop("pid", None)
    return sorted(merged.values(), key=lambda e: e["id"])


def running_services() -> dict[str, Any]:
    """This installation's service containers, or why they cannot be listed (no Docker engine)."""
    from .. import services

    try:
        containers = services.get_service_registry().managed()
        return {"available": True, "containers": [services.describe(c) for c in containers]}
    except Exception as exc:
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}", "containers": []}


@inspect_command(name="mediaconduit_info")
def mediaconduit_info(state: Any, **_: Any) -> dict[str, Any]:
    """Remote control: everything ``mediaconduit status`` shows of this worker in one reply (its queues,
    stats and active jobs through Celery's own inspect commands, its loaded providers, running services
    and threads stuck past a deadline), so the report costs one broadcast and one timeout, not four."""
    from celery.worker import control

    from .deadlines import STUCK

    hostname = state.consumer.hostname
    return {"providers": loaded_providers(hostname), "services": running_services(), "pid": os.getpid(),
            "stuck": STUCK.snapshot(), "queues": control.active_queues(state), "stats": control.stats(state),
            "active": len(control.active(state))}


def cluster_status(app: Celery, timeout: float = 2.0) -> list[dict[str, Any]]:
    """One entry per worker that answered: queues, concurrency, active jobs, providers, services."""
    replies = app.control.broadcast("mediaconduit_info", reply=True, timeout=timeout) or []
    infos = {name: reply for item in replies for name, reply in item.items() if isinstance(reply, dict)}
    workers = []
    for name in sorted(infos):
        detail = infos[name]
        if "error" in detail:  # a worker of a version without the command: named, nothing else known
            detail = {}
        st = detail.get("stats") or {}
        implementation = str((st.get("pool") or {}).get("implementation") or "")
        workers.append({
            "worker": name,
            "queues": sorted(q["name"] for q in detail.get("queues", [])),
            "pool": POOL_NAMES.get(implementation.split(":")[0], implementation or None),
            "concurrency": (st.get("pool") or {}).get("max-concurrency"),
            "processes": (st.get("pool") or {}).get("processes", []),
            "active": detail.get("active", 0),
            "providers": detail.get("providers", []),
            "services": detail.get("services") or {"available": False, "reason": "no reply", "containers": []},
            "stuck": detail.get("stuck") or {"stuck": 0, "abandoned_total": 0, "threads": []},
        })
    return workers


def wait_for_workers(app: Celery, count: int = 1, destination: list[str] | None = None, timeout: float = 60.0,
                     alive: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
    """Block until ``count`` workers (or those named in ``destination``) answer a ping.

    ``alive`` is asked between pings, so a worker process that died fails fast instead of timing out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"worker {', '.join(destination or [])} exited before it answered")
        replies = app.control.ping(destination=destination, timeout=0.5)
        if len(replies) >= (len(destination) if destination else count):
            return replies
    raise TimeoutError(f"{', '.join(destination) if destination else count} worker(s) did not answer within {timeout:.0f}s")


def unserved_queues(app: Celery, queues: list[str], timeout: float = 1.0) -> list[str]:
    """Those of ``queues`` no live worker consumes, so a command that would wait for a job says so at once.

    The broker transport's consumer leases answer in one Redis read (``consumers.py``); a queue they do not
    show (kombu's own transport, a worker elsewhere on an older version) is asked of the workers themselves,
    which costs ``timeout`` seconds only when some queue has no lease."""
    from .consumers import CONSUMERS_KEY, LEASE_PREFIX

    wanted = set(queues)
    served: set[str] = set()
    try:
        with app.connection_for_read() as conn:
            client = conn.default_channel.client
            listed = {k.decode() if isinstance(k, bytes) else k: json.loads(v)
                      for k, v in client.hgetall(CONSUMERS_KEY).items()}
            if listed:
                alive = client.mget([LEASE_PREFIX + c for c in listed])
                served = {s for (c, sources), lease in zip(listed.items(), alive) if lease for s in sources}
    except AttributeError:  # not a Redis broker: only the workers can say
        pass
    if wanted - served:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
        served |= {q["name"] for queues_of in replies.values() for q in queues_of}
    return [q for q in queues if q not in served]
