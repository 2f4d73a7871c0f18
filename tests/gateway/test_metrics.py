"""The gateway's metrics, read from its real endpoint (``--metrics-port``) after real requests: each request
counted once by its route template (never its path), method, status and tenant; jobs created per tenant;
every reason a key is refused; no label holds an id or a path."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from conftest import free_port

from .conftest import API, AUTH_FAILURES, GATEWAY_ENV, GatewayProcess, create_key, wait_finished


@pytest.fixture(scope="module")
def metered_gateway() -> Iterator[tuple[GatewayProcess, int]]:
    port = free_port()
    gateway = GatewayProcess({**GATEWAY_ENV, "MEDIACONDUIT_METRICS_PORT": str(port)}).wait_ready()
    yield gateway, port
    gateway.stop()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def forget_failed_keys() -> None:
    """Clear this address's count of bad keys (other tests of the run may have sent some this minute)."""
    from mediaconduit_worker.worker.redis_state import state_redis

    state_redis().delete("mediaconduit:gateway:authfail:127.0.0.1")


def test_requests_are_counted_by_route_template_tenant_and_status(metered_gateway, openapi, echo_url,
                                                                   text_worker) -> None:
    gateway, port = metered_gateway
    tenant = f"metered-{uuid.uuid4().hex[:6]}"
    api = API(gateway.url, create_key(tenant), openapi)
    body = {"input": "counted", "provider": echo_url, "model": "upper"}
    created = api.call("createJob", json=body, headers={"Idempotency-Key": "once"})
    assert created.status_code == 201, created.text
    again = api.call("createJob", json=body, headers={"Idempotency-Key": "once"})
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    job_id = created.json()["id"]
    assert wait_finished(api, job_id)["status"] == "succeeded"
    reads = [api.call("getJob", {"job_id": job_id}) for _ in range(3)]
    assert all(r.status_code == 200 for r in reads)
    assert httpx.get(f"{gateway.url}/v1/no-such-thing/{job_id}").status_code == 404

    forget_failed_keys()
    try:
        assert api.as_key(None).call("listJobs").status_code == 401
        for _ in range(AUTH_FAILURES):
            assert api.as_key("mc_not-a-key").call("listJobs").status_code == 401
        assert api.as_key("mc_not-a-key").call("listJobs").status_code == 429
    finally:
        forget_failed_keys()

    samples = scrape(port)
    requests = "mediaconduit_gateway_requests_total"
    assert value(samples, requests, route="/v1/jobs", method="POST", status="201", tenant=tenant) == 1
    assert value(samples, requests, route="/v1/jobs", method="POST", status="200", tenant=tenant) == 1
    reads_counted = value(samples, requests, route="/v1/jobs/{job_id}", method="GET", status="200", tenant=tenant)
    assert reads_counted >= 3  # wait_finished's reads and the three above
    assert value(samples, requests, route="/v1/jobs", method="GET", status="401", tenant="") == 1 + AUTH_FAILURES
    assert value(samples, requests, route="/v1/jobs", method="GET", status="429", tenant="") == 1
    assert value(samples, requests, route="unmatched", method="GET", status="404", tenant="") == 1
    assert value(samples, "mediaconduit_gateway_jobs_created_total", tenant=tenant) == 1
    assert value(samples, "mediaconduit_gateway_auth_failures_total", reason="missing") == 1
    assert value(samples, "mediaconduit_gateway_auth_failures_total", reason="unknown") == AUTH_FAILURES
    assert value(samples, "mediaconduit_gateway_auth_failures_total", reason="guessing") == 1
    seconds = "mediaconduit_gateway_request_duration_seconds_count"
    assert value(samples, seconds, route="/v1/jobs", method="POST") == 2
    assert value(samples, seconds, route="/v1/jobs/{job_id}", method="GET") == reads_counted
    label_values = {v for _, labels in samples for _, v in labels}
    assert not any(job_id in v or "no-such-thing" in v for v in label_values), "a label holds an id or a path"
