"""Webhooks through a real gateway process (its dispatcher), real workers, the suite's Redis and a real
receiving HTTP server on loopback, which checks nothing itself: every request it got is verified here with
the ``standardwebhooks`` package and the tenant's secret as ``mediaconduit keys webhook-secret`` prints it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from .conftest import API, GATEWAY_ENV, GatewayProcess, create_key, wait_finished

HANG = -1
"""A planned answer: hold the request until the receiver is told to let go, then answer 200."""
RETRY_BASE = 0.2
LOCALHOST_PORT = 9
"""``http://localhost:9/`` is allowed by name only: no prefix names 127.0.0.1 with that port."""
TIMEOUT = 2.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    """What it was answered (``HANG`` for one held, whose answer may never have reached the sender)."""

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> str:
        return str(json.loads(self.body)["type"])


class Receiver:
    """An HTTP server webhooks are sent to; a path answers from its plan (statuses in turn, then 200)."""

    def __init__(self) -> None:
        self.got: list[Received] = []
        self.plans: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        self.let_go = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    plan = receiver.plans.get(self.path) or []
                    status = plan.pop(0) if plan else 200
                if status == HANG:
                    receiver.got.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, HANG))
                    receiver.let_go.wait(60)
                try:
                    self.send_response(200 if status == HANG else status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    return
                if status != HANG:
                    receiver.got.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def path(self, *plan: int) -> str:
        """A new path of its own, answering ``plan`` first."""
        path = f"/hook/{uuid.uuid4().hex[:8]}"
        self.plans[path] = list(plan)
        return path

    def at(self, path: str) -> list[Received]:
        return [r for r in list(self.got) if r.path == path]


class Hooks:
    """The receiver and the gateway whose dispatcher sends to it (replaced when a test kills it)."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.env = {**GATEWAY_ENV, "MEDIACONDUIT_GATEWAY_WEBHOOKS": "true",
                    "MEDIACONDUIT_WEBHOOK_ALLOW": f"{receiver.url}/hook/,http://localhost:{LOCALHOST_PORT}/",
                    "MEDIACONDUIT_WEBHOOK_RETRY_BASE": str(RETRY_BASE), "MEDIACONDUIT_WEBHOOK_TIMEOUT": str(TIMEOUT)}
        self.gateway = GatewayProcess(self.env).wait_ready()
        self.document = httpx.get(self.gateway.url + "/openapi.json").json()

    def api(self, key: str) -> API:
        return API(self.gateway.url, key, self.document)

    def restart(self) -> None:
        self.gateway = GatewayProcess(self.env).wait_ready()


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    found = Hooks(Receiver())
    yield found
    found.receiver.let_go.set()
    found.gateway.stop()
    found.receiver.server.shutdown()


def tenant() -> tuple[str, str]:
    name = f"hooked-{uuid.uuid4().hex[:6]}"
    return name, create_key(name)


def webhook_secret(name: str, *args: str) -> str:
    """``mediaconduit keys webhook-secret --tenant NAME``: its last line."""
    out = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "keys", "webhook-secret", "--tenant", name, *args],
                         capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and secret not in out.stderr
    return secret


def wait_for(what: str, done: Callable[[], bool], hooks: Hooks, timeout: float = 30) -> None:
    """Poll ``done``; on timeout, fail naming what the receiver got, what the outbox holds and the gateway's log."""
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            from mediaconduit_worker.gateway.dispatcher import RETRIES
            from mediaconduit_worker.worker.events import OUTBOX
            from mediaconduit_worker.worker.redis_state import state_redis

            client = state_redis()
            got = [(r.path, r.event, r.status) for r in hooks.receiver.got]
            raise AssertionError(f"not within {timeout:g}s: {what}; received {got}; outbox {client.xlen(OUTBOX)} "
                                 f"entries, {client.zcard(RETRIES)} retries; the gateway's log:\n"
                                 f"{hooks.gateway.log_text()[-3000:]}")
        time.sleep(0.05)


def delivered(received: list[Received]) -> list[Received]:
    return [r for r in received if 200 <= r.status < 300]


def verified(secret: str, received: list[Received]) -> list[dict[str, Any]]:
    """Every request's body, each verified (signature, timestamp) by ``standardwebhooks`` with ``secret``."""
    return [Webhook(secret).verify(r.body, r.headers) for r in received]


def test_deliveries_are_signed_and_filtered_and_a_chain_sends_one_start_and_one_completed(
        hooks: Hooks, echo_url: str, text_worker) -> None:
    name, key = tenant()
    api = hooks.api(key)
    only_completed, every, chained = (hooks.receiver.path() for _ in range(3))
    jobs = {
        only_completed: api.call("createJob", json={"input": "a", "provider": echo_url, "model": "upper",
                                                    "webhook": hooks.receiver.url + only_completed,
                                                    "webhook_events_filter": ["completed"]}).json()["id"],
        every: api.call("createJob", json={"input": "b", "provider": echo_url, "model": "upper",
                                           "webhook": hooks.receiver.url + every}).json()["id"],
        chained: api.call("createJob", json={"input": "c", "provider": echo_url, "model": "upper",
                                             "steps": [{"provider": echo_url, "model": "upper"}],
                                             "webhook": hooks.receiver.url + chained}).json()["id"],
    }
    for path, job_id in jobs.items():
        assert wait_finished(api, job_id)["status"] == "succeeded"
        wait_for(f"{path}'s completed", lambda path=path: "completed" in [r.event for r in hooks.receiver.at(path)], hooks)
    secret = webhook_secret(name)
    bodies = {path: verified(secret, hooks.receiver.at(path)) for path in jobs}
    assert [b["type"] for b in bodies[only_completed]] == ["completed"]
    assert sorted(b["type"] for b in bodies[every]) == ["completed", "output", "start"]
    assert sorted(b["type"] for b in bodies[chained]) == ["completed", "output", "output", "start"]  # each step's output
    output = next(b for b in bodies[every] if b["type"] == "output")
    assert output["event"]["data"] == {"chunk": "B"} and output["data"]["id"] == jobs[every]
    for path, job_id in jobs.items():
        completed = next(b for b in bodies[path] if b["type"] == "completed")
        assert completed["data"]["id"] == job_id and completed["data"]["status"] == "succeeded"
        assert completed["data"]["result"]["asset"]["content"] == {only_completed: "A", every: "B", chained: "C"}[path]
        assert completed["data"]["urls"]["get"] == f"{hooks.gateway.url}/v1/jobs/{job_id}"
        assert completed["event"]["data"]["status"] == "succeeded"
    ids = [r.webhook_id for path in jobs for r in hooks.receiver.at(path)]
    assert len(ids) == len(set(ids)) == 8
    tampered = hooks.receiver.at(every)[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered.body.replace(b"upper", b"lower"), tampered.headers)


def test_a_receiver_failing_for_a_while_gets_every_event_exactly_once(hooks: Hooks, echo_url: str, text_worker) -> None:
    """503 (and a 429, a 408) for its first six requests, then 200: every event arrives, each once."""
    name, key = tenant()
    api = hooks.api(key)
    path = hooks.receiver.path(503, 503, 429, 503, 408, 503)
    job_id = api.call("createJob", json={"input": "later", "provider": echo_url, "model": "upper",
                                         "webhook": hooks.receiver.url + path}).json()["id"]
    assert wait_finished(api, job_id)["status"] == "succeeded"
    wait_for("every event answered 200", lambda: len(delivered(hooks.receiver.at(path))) >= 3, hooks)
    time.sleep(4 * RETRY_BASE)  # room for a wrong extra delivery to show
    got = hooks.receiver.at(path)
    assert len(got) >= 9  # six refused, three taken
    secret = webhook_secret(name)
    verified(secret, got)
    per_id = Counter(r.webhook_id for r in delivered(got))
    assert sorted(per_id.values()) == [1, 1, 1]
    assert sorted(r.event for r in delivered(got)) == ["completed", "output", "start"]
    assert {r.webhook_id for r in got} == set(per_id)  # every retry kept its webhook-id


def test_a_gateway_killed_mid_delivery_loses_nothing(hooks: Hooks, echo_url: str, text_worker) -> None:
    """The gateway holding two deliveries under way and one due for a retry is SIGKILLed; the one started after
    takes them all over (the two from the outbox's pending entries, the third from the retry set)."""
    name, key = tenant()
    api = hooks.api(key)
    path = hooks.receiver.path(HANG, HANG, 503)
    job_id = api.call("createJob", json={"input": "kill", "provider": echo_url, "model": "upper",
                                         "webhook": hooks.receiver.url + path}).json()["id"]
    wait_for("two deliveries held, one refused", lambda: len(hooks.receiver.at(path)) == 3, hooks)
    os.killpg(hooks.gateway.proc.pid, signal.SIGKILL)
    hooks.gateway.proc.wait()
    hooks.receiver.let_go.set()
    hooks.restart()
    hooks.receiver.let_go.clear()
    assert wait_finished(hooks.api(key), job_id)["status"] == "succeeded"
    wait_for("every event delivered after the restart", lambda: len(delivered(hooks.receiver.at(path))) >= 3, hooks)
    got = hooks.receiver.at(path)
    verified(webhook_secret(name), got)
    held = {r.webhook_id for r in got if r.status == HANG}
    assert len(held) == 2
    assert set(Counter(r.webhook_id for r in delivered(got))) == {r.webhook_id for r in got}  # none lost
    assert held <= {r.webhook_id for r in delivered(got)}  # each held one sent again, and taken
    assert sorted(r.event for r in delivered(got)) == ["completed", "output", "start"]


def test_refused_webhook_urls_name_the_field_and_value(hooks: Hooks, echo_url: str) -> None:
    _, key = tenant()
    api = hooks.api(key)
    for url, says in [
        ("http://10.1.2.3/hook", "is not allowed by MEDIACONDUIT_WEBHOOK_ALLOW"),
        ("http://169.254.169.254/latest/meta-data", "is not allowed by MEDIACONDUIT_WEBHOOK_ALLOW"),
        (f"{hooks.receiver.url}/elsewhere", "is not allowed by MEDIACONDUIT_WEBHOOK_ALLOW"),
        (f"http://user:pw@127.0.0.1:{hooks.receiver.port}/hook/x", "carries credentials"),
        # allowed by a prefix that names the host, not the loopback address (and port) it resolves to
        (f"http://localhost:{LOCALHOST_PORT}/hook", "localhost (resolves to 127.0.0.1) is not a public address (loopback)"),
    ]:
        answer = api.call("createJob", json={"input": "x", "provider": echo_url, "model": "upper", "webhook": url})
        assert answer.status_code == 422, (url, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        problem = answer.json()
        assert problem["field"] == "/webhook" and says in problem["detail"], (url, problem)
        assert problem["value"] == url if "@" not in url else "pw" not in problem["value"]


def test_a_name_resolving_to_loopback_is_refused_at_send_time(hooks: Hooks) -> None:
    """What a name resolves to is checked again when the delivery is made (a DNS answer can change)."""
    from mediaconduit_worker.gateway.dispatcher import Delivery, Dispatcher
    from mediaconduit_worker.settings import Settings
    from mediaconduit_worker.worker.redis_state import state_redis

    settings = Settings(webhook_allow=f"http://localhost:{hooks.receiver.port}/")
    dispatcher = Dispatcher(settings, state_redis())
    delivery = Delivery("whk_test", f"http://localhost:{hooks.receiver.port}/x", "nobody", "job", "completed", "{}", time.time())

    async def attempt() -> Any:
        async with httpx.AsyncClient() as dispatcher.http:
            return await dispatcher._attempt(delivery)

    outcome = asyncio.run(attempt())
    assert outcome.kind == "failed" and "resolves to 127.0.0.1 (loopback)" in outcome.detail
    assert not hooks.receiver.at("/x")


def test_a_permanent_refusal_is_recorded_for_the_tenant_and_not_retried(hooks: Hooks, echo_url: str, text_worker) -> None:
    _, key = tenant()
    api = hooks.api(key)
    path = hooks.receiver.path(410, 410, 410)
    job_id = api.call("createJob", json={"input": "gone", "provider": echo_url, "model": "upper",
                                         "webhook": hooks.receiver.url + path}).json()["id"]
    assert wait_finished(api, job_id)["status"] == "succeeded"
    wait_for("three failures recorded",
             lambda: len(api.call("listWebhookFailures").json()["failures"]) == 3, hooks)
    failures = api.call("listWebhookFailures").json()["failures"]
    assert {f["event"] for f in failures} == {"start", "output", "completed"}
    assert all(f["job_id"] == job_id and f["status"] == 410 and f["attempts"] == 1 for f in failures)
    time.sleep(4 * RETRY_BASE)
    assert len(hooks.receiver.at(path)) == 3  # never retried
    _, other = tenant()
    assert hooks.api(other).call("listWebhookFailures").json()["failures"] == []


def test_a_rotated_secret_signs_the_deliveries_after_it(hooks: Hooks, echo_url: str, text_worker) -> None:
    name, key = tenant()
    api = hooks.api(key)
    first = webhook_secret(name)
    assert webhook_secret(name) == first  # made once, then the same
    before, after = hooks.receiver.path(), hooks.receiver.path()
    for path in (before, after):
        if path == after:
            rotated = webhook_secret(name, "--rotate")
            assert rotated != first and webhook_secret(name) == rotated
        job_id = api.call("createJob", json={"input": "r", "provider": echo_url, "model": "upper",
                                             "webhook": hooks.receiver.url + path,
                                             "webhook_events_filter": ["completed"]}).json()["id"]
        assert wait_finished(api, job_id)["status"] == "succeeded"
        wait_for(f"{path} delivered", lambda path=path: bool(delivered(hooks.receiver.at(path))), hooks)
    verified(first, hooks.receiver.at(before))
    verified(rotated, hooks.receiver.at(after))
    with pytest.raises(WebhookVerificationError):
        verified(first, hooks.receiver.at(after))
    unknown = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "keys", "webhook-secret", "--tenant",
                              "no-such-tenant"], capture_output=True, text=True)
    assert unknown.returncode == 1 and "no-such-tenant" in unknown.stderr and "whsec_" not in unknown.stdout
