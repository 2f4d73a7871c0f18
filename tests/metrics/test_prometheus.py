"""A real Prometheus server (Debian's ``prometheus``) scraping a real worker's and a real gateway's metrics
ports every second: after jobs run through ``transform`` and through the gateway's ``POST /v1/jobs``, its
HTTP API answers with their counts (calls per provider and model, jobs per queue and outcome, gateway
requests per tenant and status, jobs created per tenant).

Without the binary the test skips, and fails in CI (``MEDIACONDUIT_REQUIRE_PROMETHEUS=1``, set by .ci/run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import RUN_DIR, WorkerProcess, free_port
from gateway.conftest import GATEWAY_ENV, GatewayProcess, create_key

REQUIRE_PROMETHEUS = os.environ.get("MEDIACONDUIT_REQUIRE_PROMETHEUS") == "1"
JOBS = 3
"""Jobs sent through ``transform`` to the metered worker."""


class PrometheusServer:
    """``prometheus`` on a loopback port, scraping ``targets`` (job name: host:port) every second."""

    def __init__(self, binary: str, targets: dict[str, str], folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = targets
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                                     for job, target in targets.items()]}
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = RUN_DIR / f"prometheus-{uuid.uuid4().hex[:6]}.log"
        self.proc = subprocess.Popen([binary, f"--config.file={folder / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={folder / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> PrometheusServer:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus was not ready within {timeout:g}s:\n{self.log_text()[-3000:]}")

    def query(self, promql: str) -> dict[str, float]:
        """The instant vector ``promql`` evaluates to, as {its labels rendered: value}."""
        reply = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["status"] == "success", body
        return {",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
                for r in body["data"]["result"]}

    def wait_for(self, promql: str, want: dict[str, float], timeout: float = 60) -> None:
        """Until ``promql`` evaluates to ``want`` (a scrape a second: a few seconds)."""
        end = time.monotonic() + timeout
        while (got := self.query(promql)) != want:
            assert time.monotonic() < end, f"{promql} is {got}, not {want}, after {timeout:g}s"
            time.sleep(0.5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        from mediaconduit_worker.cli.worker import stop_process

        stop_process(self.proc)


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        reason = "no prometheus binary on PATH (apt-get install prometheus)"
        if REQUIRE_PROMETHEUS:
            pytest.fail(f"MEDIACONDUIT_REQUIRE_PROMETHEUS=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def scraped(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[PrometheusServer, str, GatewayProcess]]:
    """A metered worker on a queue of its own, a metered gateway, and Prometheus scraping both."""
    worker_port, gateway_port = free_port(), free_port()
    queue = f"scraped-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(queue=queue, concurrency=2, env={"MEDIACONDUIT_METRICS_PORT": str(worker_port)})
    gateway = GatewayProcess({**GATEWAY_ENV, "MEDIACONDUIT_METRICS_PORT": str(gateway_port)})
    server = None
    try:
        worker.wait_ready()
        gateway.wait_ready()
        server = PrometheusServer(prometheus_binary, {"worker": f"127.0.0.1:{worker_port}",
                                                      "gateway": f"127.0.0.1:{gateway_port}"},
                                  tmp_path_factory.mktemp("prometheus")).wait_ready()
        yield server, queue, gateway
    finally:
        if server is not None:
            server.stop()
        gateway.stop()
        worker.stop()


def test_prometheus_reads_the_jobs_from_a_worker_and_a_gateway(scraped, echo_url, text_worker) -> None:
    from mediaconduit_worker import transform

    server, queue, gateway = scraped
    server.wait_for("sum by (job, instance) (up)", {f"instance={target},job={job}": 1 for job, target in server.targets.items()})
    for i in range(JOBS):
        assert transform.apply_async((f"job {i}", echo_url, "upper"), queue=queue).get(timeout=60)["asset"][
            "content"] == f"JOB {i}"
    assert transform.apply_async(("kept", echo_url, "echo"), queue=queue).get(timeout=60)["asset"]["content"] == "kept"

    tenant = f"scraped-{uuid.uuid4().hex[:6]}"
    key = create_key(tenant)
    created = httpx.post(gateway.url + "/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                         json={"input": "through the gateway", "provider": echo_url, "model": "upper"}, timeout=60)
    assert created.status_code == 201, created.text
    refused = httpx.post(gateway.url + "/v1/jobs", json={"input": "x", "provider": echo_url, "model": "upper"})
    assert refused.status_code == 401

    server.wait_for('sum by (provider, model) (mediaconduit_calls_total{job="worker"})',
                    {"model=upper,provider=echo-provider": JOBS, "model=echo,provider=echo-provider": 1})
    server.wait_for(f'sum by (outcome) (mediaconduit_jobs_total{{job="worker",queue="{queue}"}})',
                    {"outcome=succeeded": JOBS + 1})
    server.wait_for('sum by (tenant, status) (mediaconduit_gateway_requests_total{job="gateway",route="/v1/jobs",'
                    'method="POST"})', {f"status=201,tenant={tenant}": 1, "status=401": 1})  # Prometheus drops an empty label
    server.wait_for('sum by (tenant) (mediaconduit_gateway_jobs_created_total{job="gateway"})', {f"tenant={tenant}": 1})
    server.wait_for('sum by (reason) (mediaconduit_gateway_auth_failures_total{job="gateway"})', {"reason=missing": 1})

