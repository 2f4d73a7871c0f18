"""``GET /v1/jobs/{id}/events`` through a real gateway process, real workers and the suite's Redis, read by
``curl -N`` (the client the API names) and by plain ``httpx`` streaming. The events expected are read from
the job's Redis streams themselves, so what is checked is that the gateway serves exactly those."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import API, GATEWAY_ENV, GatewayProcess, publish_standin_chat, wait_finished

KEEPALIVE = 0.5
"""Seconds between keep-alives of this module's gateway (short, so an idle stream shows one soon)."""
FINAL = ("succeeded", "failed", "canceled", "expired")


@pytest.fixture(scope="module")
def events_gateway() -> Iterator[GatewayProcess]:
    proc = GatewayProcess({**GATEWAY_ENV, "MEDIACONDUIT_GATEWAY_EVENTS_KEEPALIVE": str(KEEPALIVE)}).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def carol(events_gateway: GatewayProcess, alice: API) -> Iterator[API]:
    """Alice's key on this module's gateway (keys are in Redis, shared by every gateway)."""
    api = API(events_gateway.url, alice.key, httpx.get(events_gateway.url + "/openapi.json").json())
    yield api
    api.http.close()


def parse(text: str) -> list[dict[str, str]]:
    """Server-sent events as dicts of their fields (a comment under ``comment``)."""
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line:
                name, _, value = line.partition(":")
                fields[name or "comment"] = value[1:] if value.startswith(" ") else value
        if fields:
            found.append(fields)
    return found


def curl(api: API, job_id: str, last_event_id: str | None = None) -> tuple[int, list[dict[str, str]], str]:
    """``curl -N`` of the job's events: curl's exit code, the events (keep-alives left out) and stderr."""
    command = ["curl", "-N", "-sS", "--max-time", "120", "-H", f"Authorization: Bearer {api.key}",
               f"{api.base}/v1/jobs/{job_id}/events"]
    if last_event_id is not None:
        command[-1:-1] = ["-H", f"Last-Event-ID: {last_event_id}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=150)
    return out.returncode, [e for e in parse(out.stdout) if "comment" not in e], out.stderr


def stream(api: API, job_id: str, **headers: str) -> Iterator[dict[str, str]]:
    """The job's events as ``httpx`` streams them, keep-alives included, one at a time."""
    with httpx.stream("GET", f"{api.base}/v1/jobs/{job_id}/events", timeout=120,
                      headers={"Authorization": f"Bearer {api.key}", **headers}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines: list[str] = []
        for line in response.iter_lines():
            if line:
                lines.append(line)
            elif lines:
                yield parse("\n".join(lines))[0]
                lines = []


def stored(job: dict[str, Any]) -> list[dict[str, str]]:
    """The job's events as its steps' Redis streams hold them, with the ids the API gives them."""
    from mediaconduit_worker.worker.events import stream_key
    from mediaconduit_worker.worker.redis_state import state_redis

    steps = [s["task_id"] for s in job["steps"]]
    return [{"id": entry_id if len(steps) == 1 else f"{k}:{entry_id}", "event": fields["event"], "data": fields["data"]}
            for k, task_id in enumerate(steps) for entry_id, fields in state_redis().xrange(stream_key(task_id))]


def statuses(events: list[dict[str, str]]) -> list[str]:
    return [json.loads(e["data"])["status"] for e in events if e["event"] == "status"]


def test_a_succeeded_jobs_statuses_come_in_order_and_the_stream_ends_cleanly(carol: API, echo_url: str,
                                                                             text_worker) -> None:
    job = carol.call("createJob", json={"input": "hello", "provider": echo_url, "model": "upper"}).json()
    code, events, err = curl(carol, job["id"])
    assert code == 0, err
    assert statuses(events) == ["running", "succeeded"]
    assert events == stored(wait_finished(carol, job["id"]))  # ids are the stream ids, data the stored JSON

    chain = carol.call("createJob", json={"input": "abc", "provider": echo_url, "model": "upper",
                                          "steps": [{"provider": echo_url, "model": "reverse"}]}).json()
    seen = list(stream(carol, chain["id"]))
    assert statuses(seen) == ["running", "succeeded", "running", "succeeded"]
    assert seen == stored(wait_finished(carol, chain["id"]))
    assert [(e["id"].split(":")[0], e["event"]) for e in seen] == [
        ("0", "status"), ("0", "output"), ("0", "status"), ("1", "status"), ("1", "output"), ("1", "status")]
    assert [json.loads(e["data"])["chunk"] for e in seen if e["event"] == "output"] == ["ABC", "CBA"]


@pytest.fixture(scope="module")
def standin_chat_url(apis: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A provider whose model streams from the stand-in OpenAI API (SSE)."""
    return publish_standin_chat(tmp_path_factory, "events-chat", f"{apis.url}/openai/v1")


def test_a_streaming_jobs_output_chunks_come_between_its_statuses(carol: API, apis: Any, standin_chat_url: str,
                                                                  text_worker) -> None:
    """The job's model streams (the stand-in sends a word every 50 ms): ``curl -N`` gets each chunk as an
    ``output`` event, in order, between ``running`` and ``succeeded``, and the chunks join to the result."""
    from support.standin_apis import Reply, chat_events

    words = "the quick brown fox jumps over the lazy dog by the river bank"
    apis.script("POST", "/openai/v1/chat/completions", Reply(events=chat_events("gpt-4o-mini", words),
                                                             event_delay=0.05))
    job = carol.call("createJob", json={"input": "x", "provider": standin_chat_url, "model": "gpt-4o-mini"}).json()
    code, events, err = curl(carol, job["id"])
    assert code == 0, err
    finished = wait_finished(carol, job["id"])
    assert events == stored(finished)
    assert [e["event"] for e in events] == ["status", *["output"] * (len(events) - 2), "status"]
    assert statuses(events) == ["running", "succeeded"]
    chunks = [json.loads(e["data"])["chunk"] for e in events if e["event"] == "output"]
    assert len(chunks) > 1 and "".join(chunks) == words == finished["result"]["asset"]["content"]
    (call,) = apis.calls("/openai/v1/chat/completions")
    assert call.body["stream"] is True


def test_last_event_id_resumes_mid_stream_with_exactly_the_rest(carol: API, slow_url: str, text_worker) -> None:
    """Read live until the first step's end, hang up, resume with curl from the last id received: the rest
    comes, none lost or repeated; resumed after the final event, 204 (an EventSource stops there)."""
    step = {"provider": slow_url, "model": "sleep", "options": {"seconds": 0.5}}
    job = carol.call("createJob", json={"input": "x", **step, "steps": [step, step]}).json()
    first: list[dict[str, str]] = []
    for event in stream(carol, job["id"]):
        if "comment" not in event:
            first.append(event)
        if first and statuses(first)[-1:] == ["succeeded"]:
            break  # the client goes away mid-job
    code, rest, err = curl(carol, job["id"], last_event_id=first[-1]["id"])
    assert code == 0, err
    everything = stored(wait_finished(carol, job["id"]))
    assert first + rest == everything
    assert len(rest) == len(everything) - len(first) and statuses(rest)[-1] == "succeeded"

    for k in range(len(everything) - 1):  # from any event on, exactly what follows it
        assert curl(carol, job["id"], last_event_id=everything[k]["id"])[1] == everything[k + 1:]
    after_end = httpx.get(f"{carol.base}/v1/jobs/{job['id']}/events", headers={
        "Authorization": f"Bearer {carol.key}", "Last-Event-ID": everything[-1]["id"]})
    assert after_end.status_code == 204


def test_a_cancel_mid_run_ends_the_stream_with_canceled(carol: API, slow_url: str, text_worker) -> None:
    job = carol.call("createJob", json={"input": "long", "provider": slow_url, "model": "sleep",
                                        "options": {"seconds": 60}}).json()
    client = subprocess.Popen(["curl", "-N", "-sS", "--max-time", "120", "-H", f"Authorization: Bearer {carol.key}",
                               f"{carol.base}/v1/jobs/{job['id']}/events"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert client.stdout is not None
    try:
        for line in client.stdout:
            if line.startswith("data:") and json.loads(line[5:])["status"] == "running":
                break
        assert carol.call("cancelJob", {"job_id": job["id"]}).status_code == 200
        rest, err = client.communicate(timeout=90)
    finally:
        client.kill()
    assert client.returncode == 0, f"curl exited {client.returncode} (18: the stream ended uncleanly): {err}"
    events = [e for e in parse(rest) if "comment" not in e]
    assert statuses(events)[-1] == "canceled"
    assert "HTTP API" in json.loads(events[-1]["data"])["reason"]


def test_an_idle_stream_gets_keepalives_and_a_gone_client_frees_its_reader(carol: API, slow_url: str,
                                                                           events_gateway: GatewayProcess) -> None:
    """A job no worker serves stays queued: its stream is idle. It sends keep-alive comments; the gateway
    waits in XREAD on a connection of its own, which is gone as soon as the client hangs up."""
    from mediaconduit_worker.worker.redis_state import state_redis

    job = carol.call("createJob", json={"input": "idle", "provider": slow_url, "model": "parked"}).json()
    name = f"mediaconduit-gateway-events-{events_gateway.proc.pid}"

    def readers() -> int:
        """The gateway's event connections blocked in XREAD now."""
        return sum(1 for c in state_redis().client_list() if c["name"] == name and "b" in c["flags"])

    def until(count: int) -> int:
        for _ in range(200):
            if readers() == count:
                break
            time.sleep(0.05)
        return readers()

    events = stream(carol, job["id"])
    assert next(events) == {"comment": "keep-alive"}
    assert next(events) == {"comment": "keep-alive"}
    assert until(1) == 1
    events.close()  # the client hangs up
    assert until(0) == 0
    for _ in range(10):  # and stays gone across several keep-alive periods: nothing reads for it any more
        time.sleep(KEEPALIVE / 2)
        assert readers() == 0
    carol.call("cancelJob", {"job_id": job["id"]})
    code, ended, err = curl(carol, job["id"])
    assert code == 0 and statuses(ended) == ["canceled"], err


def test_another_tenants_job_answers_404_and_a_bad_last_event_id_400(carol: API, bob: API, events_gateway,
                                                                   slow_url: str) -> None:
    job = carol.call("createJob", json={"input": "mine", "provider": slow_url, "model": "parked"}).json()
    try:
        seen = httpx.get(f"{carol.base}/v1/jobs/{job['id']}/events", headers={"Authorization": f"Bearer {bob.key}"})
        assert seen.status_code == 404 and seen.headers["content-type"].startswith("application/problem+json")
        assert seen.json()["field"] == "id" and seen.json()["value"] == job["id"]
        for bad in ("yesterday", "1:1733318400000-0", "1733318400000"):
            refused = httpx.get(f"{carol.base}/v1/jobs/{job['id']}/events",
                                headers={"Authorization": f"Bearer {carol.key}", "Last-Event-ID": bad})
            assert refused.status_code == 400 and refused.json()["field"] == "Last-Event-ID", refused.text
            assert refused.json()["value"] == bad
    finally:
        carol.call("cancelJob", {"job_id": job["id"]})


def test_a_failed_jobs_stream_ends_with_failed_and_its_error(carol: API, slow_url: str, text_worker) -> None:
    job = carol.call("createJob", json={"input": "x", "provider": slow_url, "model": "sleep",
                                        "options": {"seconds": -1}}).json()
    code, events, err = curl(carol, job["id"])
    assert code == 0, err
    assert statuses(events) == ["running", "failed"]
    error = json.loads(events[-1]["data"])["error"]
    assert error["type"] == "ProviderExecutionError" and "non-negative" in error["message"]
    assert error == wait_finished(carol, job["id"])["error"]


def test_the_openapi_document_describes_the_event_stream(carol: API) -> None:
    operation = carol.document["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert operation["operationId"] == "getJobEvents"
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"404", "400", "204"} <= set(operation["responses"])
    assert any(p["name"] == "Last-Event-ID" and p["in"] == "header" for p in operation["parameters"])


def test_a_wait_longer_than_redis_pys_read_timeout_keeps_its_connection(alice: API, slow_url: str) -> None:
    """With the default keep-alive (10 s) a stream waits longer than redis-py's default read timeout (5 s):
    the reader keeps one Redis connection through a whole wait, not one cut and redone every 5 s."""
    from mediaconduit_worker.worker.redis_state import state_redis

    keepalive = 6
    gw = GatewayProcess({**GATEWAY_ENV, "MEDIACONDUIT_GATEWAY_EVENTS_KEEPALIVE": str(keepalive)}).wait_ready()
    api = API(gw.url, alice.key, {"paths": {}})
    job = alice.call("createJob", json={"input": "idle", "provider": slow_url, "model": "parked"}).json()
    name = f"mediaconduit-gateway-events-{gw.proc.pid}"

    def blocked() -> list[str]:
        return [c["id"] for c in state_redis().client_list() if c["name"] == name and "b" in c["flags"]]

    def until_blocked() -> list[str]:
        for _ in range(100):
            if blocked():
                break
            time.sleep(0.05)
        return blocked()

    try:
        events = stream(api, job["id"])
        assert next(events) == {"comment": "keep-alive"}
        first = until_blocked()
        assert len(first) == 1
        assert next(events) == {"comment": "keep-alive"}  # a whole wait of 6 s more
        assert until_blocked() == first, "the wait's connection was cut and made again"
        events.close()
    finally:
        alice.call("cancelJob", {"job_id": job["id"]})
        gw.stop()
