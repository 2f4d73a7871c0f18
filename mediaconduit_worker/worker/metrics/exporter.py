"""The metrics endpoint of a worker command: what its processes recorded, and what Redis says now.

One HTTP server per worker command (``mediaconduit worker --metrics-port P``), in the process that
starts the Celery workers. At each scrape it adds up the processes' files (``MultiProcessCollector``),
first removing the live gauges of processes that were killed, derives each worker's free slots, and
reads the cluster's state from Redis: the scaling signal and its parts per queue, each route
candidate's cooldown and leases in flight, and the running service containers (cached a few seconds: a
Docker listing is slow). A part that cannot be read (Redis down, no Docker engine) is left out of that
scrape, never failing it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ...settings import get_settings
from .multiproc import mark_dead
from .scaling import queue_loads, quick_redis

log = logging.getLogger(__name__)
SERVICES_TTL = 15.0
"""Seconds a listing of the service containers is reused."""
SCRAPED = {
    "mediaconduit_pool_slots_free": "Slots of a worker free now (slots minus busy).",
    "mediaconduit_queue_jobs": "Jobs of a queue by state: queued (in its list) or held (taken by a worker and not "
                               "acknowledged: reserved or running).",
    "mediaconduit_queue_slots": "Slots of the live workers consuming a queue.",
    "mediaconduit_scaling_signal": "(queued + held) / slots of a queue; the work itself when it has no slot.",
    "mediaconduit_candidate_cooldown_seconds": "Seconds a route candidate stays cooled down (0: serving).",
    "mediaconduit_candidate_in_flight": "Calls a route candidate has in flight across the cluster (its live leases).",
    "mediaconduit_services_running": "Running service containers of this installation.",
}
"""The series read at each scrape, beside the recorded ones (``series.RECORDED``)."""


class WorkerCollector(Collector):
    """The recorded series of a worker command's processes, and its workers' free slots."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = MultiProcessCollector(None, str(path))

    def collect(self) -> Iterator[Metric]:
        mark_dead(self.path)
        slots: dict[str, float] = {}
        busy: dict[str, float] = {}
        for metric in self.files.collect():
            if metric.name in ("mediaconduit_pool_slots", "mediaconduit_pool_slots_busy"):
                into = slots if metric.name == "mediaconduit_pool_slots" else busy
                for sample in metric.samples:
                    into[sample.labels["worker"]] = into.get(sample.labels["worker"], 0.0) + sample.value
            yield metric
        free = GaugeMetricFamily("mediaconduit_pool_slots_free", SCRAPED["mediaconduit_pool_slots_free"], labels=["worker"])
        for worker, total in sorted(slots.items()):
            free.add_metric([worker], max(total - busy.get(worker, 0.0), 0.0))
        yield free


class ClusterCollector(Collector):
    """What Redis and Docker say now: queues, route candidates, services."""

    def __init__(self) -> None:
        self._services: tuple[float, int | None] = (0.0, None)
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        yield from self._guarded("queues", self._queues)
        yield from self._guarded("route candidates", self._candidates)
        yield from self._guarded("services", self._running_services)

    @staticmethod
    def _guarded(what: str, part: Any) -> Iterator[Metric]:
        try:
            found = list(part())
        except Exception as exc:  # a scrape never fails for one part it cannot read
            log.debug("metrics: %s not read: %s", what, exc)
            return
        yield from found

    @staticmethod
    def _queues() -> Iterator[Metric]:
        jobs = GaugeMetricFamily("mediaconduit_queue_jobs", SCRAPED["mediaconduit_queue_jobs"], labels=["queue", "state"])
        slots = GaugeMetricFamily("mediaconduit_queue_slots", SCRAPED["mediaconduit_queue_slots"], labels=["queue"])
        signal = GaugeMetricFamily("mediaconduit_scaling_signal", SCRAPED["mediaconduit_scaling_signal"], labels=["queue"])
        for load in queue_loads(client=quick_redis()):
            jobs.add_metric([load.queue, "queued"], load.queued)
            jobs.add_metric([load.queue, "held"], load.held)
            slots.add_metric([load.queue], load.slots)
            signal.add_metric([load.queue], load.signal)
        yield from (jobs, slots, signal)

    @staticmethod
    def _candidates() -> Iterator[Metric]:
        from ..limits import RoutingState
        from ..routes import get_routes

        labels = ["route", "candidate", "model"]
        cool = GaugeMetricFamily("mediaconduit_candidate_cooldown_seconds",
                                 SCRAPED["mediaconduit_candidate_cooldown_seconds"], labels=labels)
        flying = GaugeMetricFamily("mediaconduit_candidate_in_flight", SCRAPED["mediaconduit_candidate_in_flight"],
                                   labels=labels)
        state = RoutingState(quick_redis(get_settings().effective_result_backend))
        for name, route in sorted(get_routes().routes.items()):
            for cand in route.candidates:
                snap = state.snapshot(cand.cid, cand.limits, route.policy)
                cool.add_metric([name, str(cand.index), cand.model], snap["cooldown_ms"] / 1000)
                flying.add_metric([name, str(cand.index), cand.model], snap["in_flight"])
        yield from (cool, flying)

    def _running_services(self) -> Iterator[Metric]:
        with self._lock:
            at, count = self._services
            if count is None or time.monotonic() - at > SERVICES_TTL:
                from ..status import running_services

                listed = running_services()
                count = len([c for c in listed["containers"] if str(c.get("status")).startswith("running")]) if listed["available"] else None
                self._services = (time.monotonic(), count)
        if count is not None:
            yield GaugeMetricFamily("mediaconduit_services_running", SCRAPED["mediaconduit_services_running"], value=count)


def registry(path: Path) -> CollectorRegistry:
    """The registry a worker command's endpoint serves."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(WorkerCollector(path))
    reg.register(ClusterCollector())
    return reg


_serving: dict[int, Any] = {}


def serve(port: int, address: str, path: Path) -> None:
    """Serve ``path``'s series on ``address:port`` from a daemon thread of this process (once per port)."""
    if port in _serving:
        return
    server, _thread = start_http_server(port, address, registry=registry(path))
    _serving[port] = server
    log.info("metrics on http://%s:%d/metrics", address, port)
