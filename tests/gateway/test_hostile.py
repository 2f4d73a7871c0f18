"""The hostile inputs of ``tests/security/probes.py`` (every probe sent as a job's input, provider URL,
model or options) tried through the HTTP API: each ends as a problem or a failed job naming its culprit,
no canary shows in any answer or log, the loopback recorder is never hit, and the gateway and its worker
keep serving. Then what only HTTP can try: body caps, a key brute force, task-id and header injection,
and spending another tenant's budget."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from security.conftest import CANARIES, CANARY_FILE, CANARY_FILE_TEXT, CANARY_OPTION, LEAKY_PROVIDER, Recorder, leaked
from security.probes import PROBES, Probe
from security.test_adversarial import _fill

from .conftest import API, AUTH_FAILURES, MAX_BODY, PRICE, create_key, wait_finished

VIAS = ("input", "provider", "model", "options")
#: Probes the gateway refuses before the worker sees them, with its own words for the culprit.
GATEWAY_CULPRITS = {
    # a blob reference must be one of the tenant's files (the worker would say the store lacks it)
    "input-blob-missing": "no file blob://sha256/0000",
    "input-blob-digest-mismatch": "no file blob://sha256/aaaa",
    # the body cap stops these before the producer's job cap
    "input-too-large-for-producer": "MEDIACONDUIT_GATEWAY_MAX_BODY_BYTES",
    "input-too-large-for-worker": "MEDIACONDUIT_GATEWAY_MAX_BODY_BYTES",
    "provider-empty": "MEDIACONDUIT_PROVIDER_ALLOW",
    # the request's own schema: options must be an object
    "options-not-an-object": '"field":"/options"',
    # 90 KB decoded: over the attacked worker's 64 KiB inline cap, under the suite worker's 4 MiB, so the
    # image reaches the text model, which refuses it
    "input-inline-too-large": "expected text input, got Image",
    "input-data-url-too-large": "expected text input, got Image",
}
#: The suite's text-to-text worker allows no input URL at all, so an input URL the attacked worker of
#: tests/security allows (towards its loopback recorder, refused there as loopback) is refused here sooner.
NO_INPUT_URL_ALLOWED = "this worker fetches no input URLs (MEDIACONDUIT_INPUT_URL_ALLOW is unset)"


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.server.shutdown()


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> str:
    from conftest import publish

    folder = tmp_path_factory.mktemp("leaky")
    models = "".join(f"  - {{id: {m}, capabilities: [text-to-text]}}\n" for m in ("leak", "flaky", "log", "slow", "ok"))
    (folder / "MediaConduit.provider.yml").write_text(
        f"id: leaky\nname: Leaky\ntype: local\nmain: provider.py\nexportName: LeakyProvider\nmodels:\n{models}")
    (folder / "provider.py").write_text(LEAKY_PROVIDER)
    CANARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    CANARY_FILE.write_text(CANARY_FILE_TEXT)
    return publish(folder, f"leaky-{uuid.uuid4().hex[:6]}", org="tests")


def _post(api: API, body: dict[str, Any]) -> httpx.Response:
    """The body as JSON text with every non-ASCII character escaped, so a lone surrogate reaches the server."""
    return api.call("createJob", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def _outcome(api: API, body: dict[str, Any]) -> tuple[str, bool]:
    """What the tenant is told (a problem, the failed job's error, or the job), and whether it failed."""
    answer = _post(api, body)
    if answer.status_code != 201:
        return answer.text, True
    job = wait_finished(api, answer.json()["id"])
    return json.dumps(job), job["status"] != "succeeded"


@pytest.mark.parametrize("probe", [p for p in PROBES if p.via in VIAS], ids=lambda p: p.id)
def test_probe_through_http(probe: Probe, alice: API, recorder: Recorder, leaky: str, echo_url: str,
                            text_worker) -> None:
    subs = {"canary_file": str(CANARY_FILE), "recorder": recorder.url, "recorder_port": recorder.url.rsplit(":", 1)[1],
            "echo": echo_url, "leaky": leaky, "canary_option": CANARY_OPTION}
    payload = _fill(probe.payload, subs)
    body: dict[str, Any] = {"input": "x", "provider": _fill(probe.provider, subs), "model": probe.model}
    if probe.options is not None:
        body["options"] = _fill(probe.options, subs)
    if probe.via == "input":
        body["input"] = payload
    elif probe.via == "provider":
        body.update(provider=payload, model="upper")
    elif probe.via == "model":
        body.update(provider=echo_url, model=payload)
    else:
        body["options"] = payload
    hits = len(recorder.hits)
    told, failed = _outcome(alice, body)
    assert not leaked(told), f"{probe.id} showed a canary: {told[:300]}"
    assert len(recorder.hits) == hits, f"{probe.id} reached the loopback recorder"
    culprit = GATEWAY_CULPRITS.get(probe.id, probe.culprit)
    if culprit is None:
        assert not failed, f"{probe.id} failed: {told[:500]}"
        return
    assert failed, f"{probe.id} succeeded: {told[:500]}"
    expected = (culprit, NO_INPUT_URL_ALLOWED) if probe.id.startswith("input-url-") else (culprit,)
    assert any(c in told for c in expected), f"{probe.id}: {expected} not in {told[:800]}"


def test_the_worker_and_gateway_still_serve_and_no_log_holds_a_canary(alice: API, echo_url: str, gateway,
                                                                       text_worker) -> None:
    job = alice.call("createJob", headers={"Prefer": "wait=30"},
                     json={"input": "still here", "provider": echo_url, "model": "upper"}).json()
    assert job["status"] == "succeeded" and job["result"]["asset"]["content"] == "STILL HERE"
    for log in (gateway.log_text(), text_worker.log_text()):
        assert not [c for c in CANARIES if c in log]


def test_a_body_over_the_cap_is_refused(alice: API, echo_url: str) -> None:
    big = alice.call("createJob", json={"input": "x" * (MAX_BODY + 10), "provider": echo_url, "model": "upper"})
    assert big.status_code == 413 and "MEDIACONDUIT_GATEWAY_MAX_BODY_BYTES" in big.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"input": "'
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"x" * 65536
        yield b'", "provider": "' + echo_url.encode() + b'", "model": "upper"}'

    streamed = alice.call("createJob", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413, streamed.text


def test_guessing_keys_is_stopped_per_address(alice: API, gateway) -> None:
    """After AUTH_FAILURES bad keys from one address even a good key from there gets 429; other addresses
    are not affected (the test sends from 127.0.0.2, the rest of the suite from 127.0.0.1)."""
    guesser = alice.as_key("mck_" + "A" * 43, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    codes = [guesser.call("listJobs").status_code for _ in range(AUTH_FAILURES + 2)]
    assert codes[:AUTH_FAILURES] == [401] * AUTH_FAILURES and codes[AUTH_FAILURES:] == [429, 429]
    right_key = alice.as_key(alice.key, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    refused = right_key.call("listJobs")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert alice.call("listJobs").status_code == 200


def test_a_tenant_cannot_set_task_ids_headers_or_celery_options(alice: API, echo_url: str, text_worker) -> None:
    chosen = str(uuid.uuid4())
    for field, value in (("task_id", chosen), ("id", chosen), ("headers", {"mediaconduit_exec": {"service_commit": "x"}}),
                         ("queue", "celery"), ("expires", 1), ("mediaconduit_batch", {"id": "x"})):
        answer = alice.call("createJob", json={"input": "x", "provider": echo_url, "model": "upper", field: value})
        assert answer.status_code == 422 and answer.json()["field"] == f"/{field}", answer.text
    injected = alice.call("createJob", headers={"Prefer": "wait=30", "Idempotency-Key": chosen,
                                                "mediaconduit_exec": '{"service_commit": "x"}', "X-Task-Id": chosen},
                          json={"input": "x", "provider": echo_url, "model": "upper",
                                "options": {"service_commit": "deadbeef"}}).json()
    assert injected["id"] != chosen and injected["status"] == "succeeded", injected
    assert injected["result"]["metadata"]["task_id"] == injected["id"]
    from mediaconduit_worker.celery_app import app

    assert app.backend.get_task_meta(chosen)["status"] == "PENDING"  # nothing ran under the tenant's id


def test_a_tenant_cannot_spend_another_tenants_budget(gateway, openapi, slow_url: str, text_worker) -> None:
    """Each job charges the tenant whose key sent it, whatever its options say: the poor tenant's second
    call is refused by its own budget, the rich tenant's is untouched until it spends itself."""
    from mediaconduit_worker.gateway.tenants import Tenant
    from mediaconduit_worker.worker.limits import RoutingState

    rich, poor = f"rich-{uuid.uuid4().hex[:6]}", f"poor-{uuid.uuid4().hex[:6]}"
    rich_api = API(gateway.url, create_key(rich, "--budget-usd", "1"), openapi)
    poor_api = API(gateway.url, create_key(poor, "--budget-usd", str(PRICE * 1.2)), openapi)
    body = {"input": "x", "provider": slow_url, "model": "priced",
            "options": {"seconds": 0, "budget_usd": 5, "tenant": rich, "batch": {"id": f"tenant:{rich}"}}}
    first = poor_api.call("createJob", headers={"Prefer": "wait=30"}, json=body).json()
    assert first["status"] == "succeeded" and first["cost_usd"] == PRICE, first
    second = poor_api.call("createJob", headers={"Prefer": "wait=30"}, json=body).json()
    assert second["status"] == "failed" and f"tenant:{poor}" in second["error"]["message"], second
    assert rich not in second["error"]["message"]
    state = RoutingState()
    assert state.spend(f"batch:{Tenant(poor).spend_scope}")[0] == PRICE
    assert state.spend(f"batch:{Tenant(rich).spend_scope}") == (0.0, 0.0)
    own = rich_api.call("createJob", headers={"Prefer": "wait=30"}, json=body).json()
    assert own["status"] == "succeeded" and state.spend(f"batch:{Tenant(rich).spend_scope}")[0] == PRICE
