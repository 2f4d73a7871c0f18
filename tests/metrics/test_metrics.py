"""A worker's metrics, read from its real endpoint after real jobs: every documented series is there and
its values are the jobs run; a killed pool process's live gauges go, its counters stay; the scaling
signal counts the jobs a worker holds, which the list no longer shows."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import REPO, WorkerProcess, free_port

METER = """
import os
import time
from pathlib import Path
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text
from mediaconduit_worker.errors import ProviderHTTPError


class Model(TextToTextModel):
    def transform(self, input, options=None):
        text = input_text(input)
        if self.id == "fail":
            raise ProviderHTTPError("the API said no", status=400)
        if self.id == "slow":
            pidfile = Path((options or {}).get("pidfile") or os.devnull)
            if pidfile == Path(os.devnull) or not pidfile.exists():  # a job run again after a kill is quick
                if pidfile != Path(os.devnull):
                    pidfile.write_text(str(os.getpid()))
                time.sleep(float(text))
        out = Text.from_string(text.upper())
        out.metadata["usage"] = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        return out


class Meter(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: Model}

    def discover_models(self):
        models = super().discover_models()
        for m in models:
            if m.id in ("count", "cached"):
                m.pricing = {"prompt": 0.001, "completion": 0.002}
        return models
"""
CALL_USD = 5 * 0.001 + 7 * 0.002
"""What a priced call of the meter provider costs: 5 prompt and 7 completion tokens at its pricing."""


def documented_series() -> set[str]:
    text = (REPO / "docs" / "operations.md").read_text()
    block = re.search(r"<!-- series -->(.*?)<!-- end -->", text, re.S)
    assert block, "docs/operations.md has no series table"
    return set(re.findall(r"^\| `(mediaconduit_\w+)` \|", block.group(1), re.M))


def exposed_name(metric: Any) -> str:
    """A recorded series' name as scraped: counters gain ``_total``."""
    (family,) = metric.describe()
    return f"{family.name}_total" if family.type == "counter" else family.name


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


@pytest.fixture(scope="module")
def meter_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from conftest import publish

    folder = tmp_path_factory.mktemp("meter") / "meter-provider"
    folder.mkdir()
    manifest = {"id": "meter", "name": "Meter", "capabilities": ["text-to-text"], "main": "provider.py",
                "models": [{"id": "count"}, {"id": "fail"}, {"id": "slow"}, {"id": "cached", "cache": True}]}
    (folder / "MediaConduit.provider.yml").write_text(yaml.safe_dump(manifest))
    (folder / "provider.py").write_text(METER)
    return publish(folder, f"meter-{uuid.uuid4().hex[:6]}", org="tests")


@pytest.fixture(scope="module")
def routes(meter_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A routes file for the test process (the producer) and the worker."""
    from mediaconduit_worker.settings import get_settings

    path = tmp_path_factory.mktemp("routes") / "routes.yml"
    path.write_text(yaml.safe_dump({"routes": {"metered": {"candidates": [
        {"provider": meter_url, "model": "count"}]}}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDIACONDUIT_ROUTES", str(path))
        get_settings.cache_clear()
        yield path
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def metered(routes: Path) -> Iterator[tuple[WorkerProcess, int, str]]:
    """A prefork worker with two pool processes, its own queue, metrics on a port of its own."""
    port = free_port()
    queue = f"metered-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(queue=queue, concurrency=2, env={"MEDIACONDUIT_ROUTES": str(routes),
                                                           "MEDIACONDUIT_METRICS_PORT": str(port)}).wait_ready()
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    except httpx.HTTPError as exc:
        worker.stop()
        pytest.fail(f"the worker serves no metrics on port {port} ({exc}):\n{worker.log_text()[-4000:]}")
    yield worker, port, queue
    worker.stop()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    return parse(reply.text)


def run_the_jobs(queue: str, meter_url: str) -> None:
    """Two priced calls, one through the route, a failure with HTTP 400, a cache miss and its hit."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from mediaconduit_worker import transform

    for _ in range(2):
        assert transform.apply_async(("ab", meter_url, "count"), queue=queue).get(timeout=60)["asset"]["content"] == "AB"
    routed = transform.apply_async(("cd", "route:metered", None), queue=queue).get(timeout=60)
    assert routed["metadata"]["candidate"]["index"] == 1
    with pytest.raises(Exception, match="the API said no") as failed:
        transform.apply_async(("x", meter_url, "fail"), queue=queue).get(timeout=60)
    assert not isinstance(failed.value, CeleryTimeout)
    key = uuid.uuid4().hex  # an input of its own: nothing cached yet
    first = transform.apply_async((key, meter_url, "cached"), queue=queue).get(timeout=60)
    again = transform.apply_async((key, meter_url, "cached"), queue=queue).get(timeout=60)
    assert first["metadata"]["cache"]["hit"] is False and again["metadata"]["cache"]["hit"] is True


def expected(worker: WorkerProcess, queue: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What ``run_the_jobs`` must leave in the series (each key: name and the labels it must include)."""
    direct = (("provider", "meter"), ("route", ""), ("tenant", ""))
    return {
        ("mediaconduit_calls_total", (*direct, ("model", "count"))): 2,
        ("mediaconduit_calls_total", (("provider", "meter"), ("model", "count"), ("route", "metered"))): 1,
        ("mediaconduit_calls_total", (*direct, ("model", "fail"))): 1,
        ("mediaconduit_calls_total", (*direct, ("model", "cached"))): 1,
        ("mediaconduit_call_errors_total", (*direct, ("model", "fail"), ("error", "ProviderHTTPError"), ("status", "400"))): 1,
        ("mediaconduit_call_errors_total", (("model", "count"),)): 0,
        ("mediaconduit_call_duration_seconds_count", (("provider", "meter"),)): 5,
        ("mediaconduit_queue_wait_seconds_count", (("queue", queue),)): 6,
        ("mediaconduit_queue_wait_seconds_bucket", (("queue", queue), ("le", "1800.0"))): 6,
        ("mediaconduit_jobs_total", (("queue", queue), ("outcome", "succeeded"))): 5,
        ("mediaconduit_jobs_total", (("queue", queue), ("outcome", "failed"))): 1,
        ("mediaconduit_cost_usd_total", (("route", ""), ("model", "count"))): 2 * CALL_USD,
        ("mediaconduit_cost_usd_total", (("route", "metered"), ("model", "count"))): CALL_USD,
        ("mediaconduit_cost_usd_total", (("route", ""), ("model", "cached"))): CALL_USD,
        ("mediaconduit_tokens_total", (("model", "count"), ("kind", "input"))): 3 * 5,
        ("mediaconduit_tokens_total", (("model", "count"), ("kind", "output"))): 3 * 7,
        ("mediaconduit_tokens_total", (("model", "cached"), ("kind", "output"))): 7,
        ("mediaconduit_cache_lookups_total", (("provider", "meter"), ("model", "cached"), ("result", "miss"))): 1,
        ("mediaconduit_cache_lookups_total", (("provider", "meter"), ("model", "cached"), ("result", "hit"))): 1,
        ("mediaconduit_pool_slots", (("worker", worker.hostname),)): 2,
        ("mediaconduit_pool_slots_busy", (("worker", worker.hostname),)): 0,
        ("mediaconduit_pool_slots_free", (("worker", worker.hostname),)): 2,
        ("mediaconduit_candidate_cooldown_seconds", (("route", "metered"), ("candidate", "1"), ("model", "count"))): 0,
        ("mediaconduit_candidate_in_flight", (("route", "metered"), ("candidate", "1"), ("model", "count"))): 0,
        ("mediaconduit_queue_jobs", (("queue", queue), ("state", "queued"))): 0,
        ("mediaconduit_queue_jobs", (("queue", queue), ("state", "held"))): 0,
        ("mediaconduit_queue_slots", (("queue", queue),)): 2,
        ("mediaconduit_scaling_signal", (("queue", queue),)): 0,
    }


def test_every_documented_series_is_recorded_or_scraped_and_only_those() -> None:
    from mediaconduit_worker.gateway import metrics as gateway
    from mediaconduit_worker.worker.metrics import series
    from mediaconduit_worker.worker.metrics.exporter import SCRAPED

    names = {exposed_name(m) for m in (*series.RECORDED, *gateway.RECORDED)} | set(SCRAPED)
    assert names == documented_series()


def test_the_endpoint_counts_the_jobs_run(metered, meter_url) -> None:
    worker, port, queue = metered
    run_the_jobs(queue, meter_url)
    samples = scrape(port)
    names = {name for name, _ in samples}
    documented = documented_series()
    histogram_parts = {n for n in names if n.endswith(("_bucket", "_count", "_sum", "_created"))}
    for series_name in documented:
        if series_name == "mediaconduit_services_running" or series_name.startswith("mediaconduit_gateway_"):
            continue  # present only where Docker answers; the gateway's are tests/gateway/test_metrics.py's
        assert series_name in names or f"{series_name}_count" in histogram_parts, f"{series_name} not exposed"
    for (name, labels), want in expected(worker, queue).items():
        assert value(samples, name, **dict(labels)) == pytest.approx(want), (name, labels)
    loaded = value(samples, "mediaconduit_providers_loaded", worker=worker.hostname, provider="meter")
    assert 1 <= loaded <= 2  # the pool processes that ran a job of it: one or both
    assert not any("http" in v or len(v) > 64 for _, labels in samples for _, v in labels), "a label is a URL"


def test_a_killed_pool_process_leaves_its_counts_and_takes_its_live_gauges(metered, meter_url, tmp_path) -> None:
    """SIGKILL the pool process in a job's call: its busy slot leaves the endpoint, what it counted stays;
    the job runs again (quickly: its pid file is there) on the process that replaces it."""
    from mediaconduit_worker import transform

    worker, port, queue = metered
    pidfile = tmp_path / "slow.pid"
    job = transform.apply_async(("30", meter_url, "slow", {"pidfile": str(pidfile)}), queue=queue)
    deadline = time.monotonic() + 60
    while not pidfile.exists() or value(scrape(port), "mediaconduit_pool_slots_busy", worker=worker.hostname) != 1:
        assert time.monotonic() < deadline, "the slow job never started"
        time.sleep(0.2)
    before = scrape(port)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert job.get(timeout=120)["asset"]["content"] == "30"
    after = scrape(port)
    assert value(after, "mediaconduit_pool_slots_busy", worker=worker.hostname) == 0
    assert value(after, "mediaconduit_pool_slots_free", worker=worker.hostname) == 2
    for model in ("count", "fail", "cached"):  # the killed process's share of these is still counted
        assert value(after, "mediaconduit_calls_total", model=model) == value(before, "mediaconduit_calls_total", model=model)
    assert value(after, "mediaconduit_calls_total", model="slow") == 1  # the run that finished; the killed one never did
    assert value(after, "mediaconduit_jobs_total", outcome="succeeded") == value(
        before, "mediaconduit_jobs_total", outcome="succeeded") + 1


def test_the_scaling_signal_counts_jobs_the_list_no_longer_shows(routes, meter_url) -> None:
    """One slot, three jobs of two seconds: while the first runs, the list holds one or two of them; the
    signal holds all three."""
    from mediaconduit_worker import transform
    from mediaconduit_worker.worker.metrics import queue_loads

    queue = f"scaled-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(queue=queue, concurrency=1).wait_ready()
    try:
        (idle,) = queue_loads([queue])
        assert (idle.queued, idle.held, idle.slots, idle.signal) == (0, 0, 1, 0.0)
        jobs = [transform.apply_async(("2", meter_url, "slow"), queue=queue) for _ in range(3)]
        deadline = time.monotonic() + 60
        while (load := queue_loads([queue])[0]).held == 0:
            assert time.monotonic() < deadline, "no job was taken"
            time.sleep(0.05)
        assert load.queued < 3 and load.queued + load.held == 3 and load.signal == 3.0
        for job in jobs:
            job.get(timeout=60)
        deadline = time.monotonic() + 30
        while (done := queue_loads([queue])[0]).held:  # the last job is acknowledged just after its result
            assert time.monotonic() < deadline, f"a finished job is still held: {done}"
            time.sleep(0.05)
        assert (done.queued, done.signal) == (0, 0.0)
    finally:
        worker.stop()
    deadline = time.monotonic() + 30
    while queue_loads([queue])[0].slots:
        assert time.monotonic() < deadline, "a stopped worker's slots stayed announced"
        time.sleep(0.2)


def test_status_queues_prints_the_signal_as_json(routes) -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "status", "--queues", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loads = {q["queue"]: q for q in json.loads(proc.stdout)}
    assert {"text-to-text", "mediaconduit"} <= set(loads)
    assert set(loads["text-to-text"]) == {"queue", "queued", "held", "slots", "signal"}
