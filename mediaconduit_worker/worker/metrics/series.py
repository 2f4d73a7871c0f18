"""The series a worker's processes record, in multiprocess mode (imported once ``PROMETHEUS_MULTIPROC_DIR``
is set). Every label value is bounded: a provider is its manifest id, a route a name of the routes file, a
queue one the worker consumes, a worker its node name, a tenant one the gateway knows; never a task id or
a URL. ``exporter.SCRAPED`` lists the series read from Redis at each scrape."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

CALL_LABELS = ("provider", "model", "route", "tenant")
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds: a local engine's milliseconds to a long generation's minutes."""
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
"""Seconds from enqueue to start, up to 30 minutes."""

calls = Counter("mediaconduit_calls", "Provider calls made (each route attempt that called a model is one).",
                CALL_LABELS, registry=None)
call_errors = Counter("mediaconduit_call_errors", "Provider calls that raised, by error class and HTTP status "
                      "(empty when the error had none).", (*CALL_LABELS, "error", "status"), registry=None)
call_seconds = Histogram("mediaconduit_call_duration_seconds", "Seconds a provider call took, failed ones too.",
                         CALL_LABELS, buckets=CALL_BUCKETS, registry=None)
queue_wait = Histogram("mediaconduit_queue_wait_seconds", "Seconds from a job's enqueue (or its ETA) to its start, "
                       "per queue.", ("queue",), buckets=WAIT_BUCKETS, registry=None)
jobs = Counter("mediaconduit_jobs", "Deliveries of transform jobs by how they ended: succeeded, failed, retried "
               "(sent back with backoff) or interrupted (cancelled, or handed back at shutdown).",
               ("queue", "outcome"), registry=None)
cost = Counter("mediaconduit_cost_usd", "USD the served calls cost, as their results' cost.usd says.",
               ("route", "provider", "model", "tenant"), registry=None)
tokens = Counter("mediaconduit_tokens", "Tokens the served calls used, as their results' usage says, by kind "
                 "(input, output).", ("route", "provider", "model", "tenant", "kind"), registry=None)
cache = Counter("mediaconduit_cache_lookups", "Result-cache lookups of cached jobs by result (hit, miss).",
                ("provider", "model", "result"), registry=None)
pool_slots = Gauge("mediaconduit_pool_slots", "Job slots of a worker's pool.", ("worker",),
                   multiprocess_mode="livemax", registry=None)
pool_busy = Gauge("mediaconduit_pool_slots_busy", "Slots of a worker running a job now.", ("worker",),
                  multiprocess_mode="livesum", registry=None)
providers_loaded = Gauge("mediaconduit_providers_loaded", "Processes of a worker that loaded a provider.",
                         ("worker", "provider"), multiprocess_mode="livesum", registry=None)

RECORDED: tuple[MetricWrapperBase, ...] = (calls, call_errors, call_seconds, queue_wait, jobs, cost, tokens, cache,
                                           pool_slots, pool_busy, providers_loaded)
"""Every recorded series."""
