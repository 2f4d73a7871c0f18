"""Provider routing end to end: ``route:NAME`` jobs through Redis to real workers, served by stand-in APIs.

Three stand-in servers play three vendors (OpenRouter, Together, X.AI), each provider published and
loaded by its URL as in production. Two worker processes with Celery's thread pool (16 threads each)
share one queue, so cooldowns, limits, spend and round-robin turns are shared through Redis across
processes, as across machines. Each stand-in counts the requests it is answering at once per path,
and records when each arrived.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import RUN_DIR, WorkerProcess
from support.remote import publish_remote_providers
from support.standin_apis import Reply, StandInAPIs

VENDORS = ("openrouter", "together", "xai")
MODELS = {"openrouter": "openai/gpt-4o-mini", "together": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
          "xai": "grok-3-mini"}
CHAT = {"openrouter": "/openrouter/api/v1/chat/completions", "together": "/together/v1/chat/completions",
        "xai": "/xai/v1/chat/completions"}
ROUTES = RUN_DIR / "routes-e2e.yml"
SHARED = "routing-e2e"
BUDGET_QUEUE = "video-to-image"  # a queue no other test's worker serves: direct batch jobs are sent there
THREADS = ["-P", "threads"]


@pytest.fixture(scope="module")
def apis() -> Iterator[dict[str, StandInAPIs]]:
    servers = {v: StandInAPIs().start() for v in VENDORS}
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def urls() -> dict[str, str]:
    return publish_remote_providers()


def worker_env(apis: dict[str, StandInAPIs]) -> dict[str, str]:
    """Each vendor's variables point at its own stand-in; calls time out after 1.5 s."""
    env = {"MEDIACONDUIT_ROUTES": str(ROUTES), "OPENROUTER_TIMEOUT": "1.5"}
    for vendor, server in apis.items():
        env.update({k: v for k, v in server.env().items() if k.startswith(vendor.upper())})
    return env


@pytest.fixture(scope="module")
def workers(apis, urls) -> Iterator[list[WorkerProcess]]:
    """Two thread-pool workers, 16 threads each, on one shared queue plus one queue of their own."""
    write_routes({"warm": {"candidates": [cand(urls, v) for v in VENDORS]}})
    env = worker_env(apis)
    started = [WorkerProcess(concurrency=16, env=env, queue=f"{SHARED},{SHARED}-{i},{BUDGET_QUEUE}", args=THREADS)
               for i in (1, 2)]
    for w in started:
        w.wait_ready()
    yield started
    for w in started:
        w.stop()


@pytest.fixture(autouse=True)
def fresh(apis, monkeypatch) -> Iterator[None]:
    """Stand-ins back to normal, no routing state left in Redis, the producer reading the test's routes file."""
    from mediaconduit_worker.settings import get_settings
    from mediaconduit_worker.worker.limits import PREFIX, client

    for server in apis.values():
        server.reset()
    redis = client()
    keys = list(redis.scan_iter(f"{PREFIX}:*", count=1000))
    if keys:
        redis.delete(*keys)
    monkeypatch.setenv("MEDIACONDUIT_ROUTES", str(ROUTES))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def cand(urls: dict[str, str], vendor: str, **extra: Any) -> dict[str, Any]:
    return {"provider": urls[vendor], "model": MODELS[vendor], **extra}


def write_routes(routes: dict[str, Any]) -> None:
    """Replace the routes file at once (workers and the producer notice the new file on their next job)."""
    tmp = ROUTES.with_name(f"{ROUTES.name}.{uuid.uuid4().hex}")
    tmp.write_text(yaml.safe_dump({"routes": routes}))
    os.replace(tmp, ROUTES)


def send(input: Any, provider: str = "route:chat", model: str | None = None, options: dict | None = None,
         queue: str = SHARED) -> Any:
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app

    try:
        return transform.apply_async((input, provider, model, options or {}), queue=queue)
    finally:
        app.amqp.queues.pop(queue, None)  # keep the app's queue table as other tests expect it


def run(input: Any = "Hello", provider: str = "route:chat", **kw: Any) -> dict[str, Any]:
    return send(input, provider, **kw).get(timeout=60)


def served_by(results: list[dict[str, Any]]) -> Counter:
    return Counter(r["metadata"]["candidate"]["index"] for r in results)


def run_many(count: int, provider: str = "route:chat", timeout: float = 120) -> list[dict[str, Any]]:
    pending = [send(f"job {i}", provider) for i in range(count)]
    return [p.get(timeout=timeout) for p in pending]


# -- failover ---------------------------------------------------------------------------------------
def test_failover_on_429_5xx_and_timeout_but_not_on_400(workers, apis, urls):
    from mediaconduit_worker import ProviderHTTPError

    write_routes({"chat": {"allowed_fails": 100, "candidates": [cand(urls, "openrouter"), cand(urls, "together")]}})
    first, second = apis["openrouter"], apis["together"]
    cases = [
        (Reply(429, {"error": {"code": 429, "message": "Rate limit exceeded"}}, headers={"Retry-After": "20"}), 429),
        (Reply(503, {"error": {"code": 503, "message": "upstream overloaded"}}), 503),
        (Reply(200, {}, delay=4.0), None),  # longer than OPENROUTER_TIMEOUT: a timeout
    ]
    for reply, status in cases:
        first.script("POST", CHAT["openrouter"], reply)
        result = run("Hello")
        meta = result["metadata"]
        assert meta["route"] == "chat"
        assert meta["candidate"] == {"index": 2, "provider": urls["together"], "model": MODELS["together"]}
        failed, ok = meta["attempts"]
        assert (failed["candidate"], failed["error"], failed["status"]) == (1, "TransientError", status)
        assert "timed out" in failed["message"] if status is None else str(status) in failed["message"]
        assert (ok["candidate"], ok["error"], ok["status"]) == (2, None, None)
        assert failed["duration_ms"] > 0 and ok["duration_ms"] > 0
        # The record names what actually served.
        assert meta["provider"] == "together-provider" and meta["provider_url"] == urls["together"]
        assert meta["model"] == MODELS["together"]
        prompt = meta["generation_prompt"]
        assert (prompt["provider"], prompt["model_id"], prompt["route"]) == ("together-provider", MODELS["together"], "chat")
        assert result["asset"]["content"] == f"[{MODELS['together']}] Hello"
    # One call each: the HTTP client did not retry inline before failing over.
    assert len(first.calls(CHAT["openrouter"])) == 3
    assert len(second.calls(CHAT["together"])) == 3

    first.script("POST", CHAT["openrouter"], Reply(400, {"error": {"code": 400, "message": "messages is malformed"}}))
    with pytest.raises(ProviderHTTPError, match=r"route 'chat', candidate 1 \(.*openrouter-provider .*\).*HTTP 400.*malformed"):
        run("Hello")
    assert len(second.calls(CHAT["together"])) == 3  # a permanent error does not fail over


def test_a_route_whose_every_candidate_fails_is_retried_with_backoff(workers, apis, urls):
    write_routes({"chat": {"allowed_fails": 100, "candidates": [cand(urls, "openrouter"), cand(urls, "together")]}})
    down = Reply(502, {"error": {"message": "bad gateway"}})
    apis["openrouter"].script("POST", CHAT["openrouter"], down)
    apis["together"].script("POST", CHAT["together"], down)
    result = run("again")
    assert result["metadata"]["candidate"]["index"] == 1  # the next delivery: both back
    assert len(apis["openrouter"].calls(CHAT["openrouter"])) == 2
    assert len(apis["together"].calls(CHAT["together"])) == 1


# -- cooldowns ---------------------------------------------------------------------------------------
def test_cooldown_spares_a_failing_candidate_across_workers_and_ends(workers, apis, urls):
    write_routes({"chat": {"allowed_fails": 2, "cooldown": 3, "candidates": [cand(urls, "openrouter"), cand(urls, "together")]}})
    failing = apis["openrouter"]
    failing.always("POST", CHAT["openrouter"], Reply(500, {"error": {"message": "internal error"}}))
    results = [run(f"job {i}", queue=f"{SHARED}-{1 + i % 2}") for i in range(8)]
    assert {r["metadata"]["worker"] for r in results} == {w.hostname for w in workers}
    assert all(r["metadata"]["candidate"]["index"] == 2 for r in results)
    # Two failures (one on each worker) cooled it down for every worker: no third call.
    assert len(failing.calls(CHAT["openrouter"])) == 2
    skipped = results[-1]["metadata"]["attempts"][0]
    assert (skipped["candidate"], skipped["skipped"]) == (1, "cooldown")

    time.sleep(3.2)  # the cooldown ends: the candidate is tried again
    failing.reset()
    assert run("later")["metadata"]["candidate"]["index"] == 1
    assert len(failing.calls(CHAT["openrouter"])) == 1
