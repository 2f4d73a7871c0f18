"""Provider routing end to end: ``route:NAME`` jobs through Redis to real workers, served by stand-in APIs.

Three stand-in servers play three vendors (OpenRouter, Together, X.AI), each provider published and
loaded by its URL as in production. Two worker processes with Celery's thread pool (16 threads each)
share one queue, so cooldowns, limits, spend and round-robin turns are shared through Redis across
processes, as across machines. Each stand-in counts the requests it is answering at once per path,
and records when each arrived.
"""

from __future__ import annotations

import json
import os
import signal
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
    from mediaconduit_worker.worker.limits import PREFIX
    from mediaconduit_worker.worker.redis_state import state_redis

    for server in apis.values():
        server.reset()
    redis = state_redis()
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
        assert meta["generation_prompt"]["route"] == "chat"
        assert meta["candidate"] == {"index": 2, "provider": urls["together"], "model": MODELS["together"]}
        failed, ok = meta["attempts"]
        assert (failed["candidate"], failed["error"], failed["status"]) == (1, "TransientError", status)
        assert "timed out" in failed["message"] if status is None else str(status) in failed["message"]
        assert (ok["candidate"], ok["error"], ok["status"]) == (2, None, None)
        assert failed["duration_ms"] > 0 and ok["duration_ms"] > 0
        # The record names what actually served.
        prompt = meta["generation_prompt"]
        assert prompt["provider_url"] == urls["together"]
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
    # The cooldown outlasts the 8 jobs even on a loaded machine (each round trip is well under a second).
    write_routes({"chat": {"allowed_fails": 2, "cooldown": 10, "candidates": [cand(urls, "openrouter"), cand(urls, "together")]}})
    failing = apis["openrouter"]
    failing.always("POST", CHAT["openrouter"], Reply(500, {"error": {"message": "internal error"}}))
    results = [run(f"job {i}", queue=f"{SHARED}-{1 + i % 2}") for i in range(8)]
    assert {r["metadata"]["worker"] for r in results} == {w.hostname for w in workers}
    assert all(r["metadata"]["candidate"]["index"] == 2 for r in results)
    # Two failures (one on each worker) cooled it down for every worker: no third call.
    assert len(failing.calls(CHAT["openrouter"])) == 2
    skipped = results[-1]["metadata"]["attempts"][0]
    assert (skipped["candidate"], skipped["skipped"]) == (1, "cooldown")

    time.sleep(10.2)  # the cooldown ends: the candidate is tried again
    failing.reset()
    assert run("later")["metadata"]["candidate"]["index"] == 1
    assert len(failing.calls(CHAT["openrouter"])) == 1


def test_cooldowns_hold_across_the_hops_and_retries_of_one_job_and_honour_retry_after(workers, apis, urls):
    from mediaconduit_worker.worker.limits import get_state
    from mediaconduit_worker.worker.routes import get_routes

    write_routes({"chat": {"allowed_fails": 1, "cooldown": 2, "candidates": [cand(urls, "openrouter"), cand(urls, "together")]}})
    apis["openrouter"].script("POST", CHAT["openrouter"], Reply(429, {"error": {"message": "slow down"}},
                                                                 headers={"Retry-After": "4"}))
    apis["together"].script("POST", CHAT["together"], Reply(500, {"error": {"message": "boom"}}))
    started = time.monotonic()
    result = run("patient")  # both fail and cool down: the job goes back to the queue until one is back
    assert result["metadata"]["candidate"]["index"] == 2  # together's 2 s cooldown ends first
    assert [len(apis[v].calls(CHAT[v])) for v in ("openrouter", "together")] == [1, 2]
    attempts = result["metadata"]["attempts"]
    assert attempts[0] == {**attempts[0], "candidate": 1, "skipped": "cooldown"}  # still cooling on the retry
    first, second = apis["together"].calls(CHAT["together"])
    assert second.at - first.at >= 1.9  # the retry waited for the cooldown, it did not hammer
    route = get_routes().get("chat")
    cooling = get_state().snapshot(route.candidates[0].cid, route.candidates[0].limits, route.policy)["cooldown_ms"]
    assert cooling > 0 and time.monotonic() - started + cooling / 1000 >= 3.5  # Retry-After: 4 s, not 2


def test_chains_of_routed_steps_record_what_served_each(workers, apis, urls):
    from mediaconduit_worker import transform

    write_routes({"chat": {"candidates": [cand(urls, "openrouter"), cand(urls, "together")]},
                  "second": {"strategy": "cost", "candidates": [cand(urls, "together"), cand(urls, "xai")]}})
    apis["openrouter"].script("POST", CHAT["openrouter"], Reply(503, {"error": {"message": "busy"}}))
    chain = transform.s("Hi", "route:chat", None).set(queue=SHARED) | transform.s("route:second", None).set(queue=SHARED)
    result = chain.apply_async().get(timeout=60)
    assert result["metadata"]["generation_prompt"]["route"] == "second" and result["metadata"]["candidate"]["index"] == 2
    outer = result["metadata"]["generation_prompt"]
    inner = outer["input"]["metadata"]["generation_prompt"]
    assert (outer["provider"], outer["route"]) == ("xai-provider", "second")
    assert (inner["provider"], inner["model_id"], inner["route"]) == ("together-provider", MODELS["together"], "chat")


# -- limits across the cluster -----------------------------------------------------------------------
def test_max_concurrency_is_never_exceeded_under_two_workers_of_16_threads(workers, apis, urls):
    write_routes({"chat": {"candidates": [cand(urls, "openrouter", max_concurrency=3),
                                          cand(urls, "together", max_concurrency=3)]}})
    for vendor in ("openrouter", "together"):
        apis[vendor].slow(CHAT[vendor], 0.2)
    results = run_many(60)
    assert len(results) == 60
    for vendor in ("openrouter", "together"):
        assert apis[vendor].max_active[CHAT[vendor]] == 3, vendor  # reached, never exceeded
    counts = served_by(results)
    assert counts[1] + counts[2] == 60 and counts[2] > 0  # at its limit, the first is skipped for the second
    waited = [a for r in results for a in r["metadata"]["attempts"] if a.get("waited_ms")]
    assert waited  # with both full, jobs waited for a slot instead of failing


def test_rpm_is_never_exceeded_in_any_window(workers, apis, urls):
    """rpm: 4 calls per 2 s window. Arrivals are checked over windows 50 ms shorter than 2 s: the
    limiter counts at the start of each call in Redis time, and a request reaches the stand-in a few
    milliseconds later, by more or less from one call to the next."""
    window, rpm, jitter = 2.0, 4, 0.05
    write_routes({"chat": {"rate_window": window, "candidates": [cand(urls, "openrouter", rpm=rpm)]}})
    results = run_many(14)
    assert served_by(results) == {1: 14}
    arrivals = sorted(r.at for r in apis["openrouter"].calls(CHAT["openrouter"]))
    assert len(arrivals) == 14
    for i, start in enumerate(arrivals):
        in_window = [t for t in arrivals[i:] if t < start + window - jitter]
        assert len(in_window) <= rpm, (i, [round(t - arrivals[0], 3) for t in arrivals])
    assert arrivals[-1] - arrivals[0] >= 3 * window - jitter  # 14 calls need at least 4 windows


def test_a_slot_held_by_a_killed_worker_comes_back_after_its_lease(workers, apis, urls):
    write_routes({"chat": {"lease_ttl": 2, "candidates": [cand(urls, "openrouter", max_concurrency=1)]}})
    api = apis["openrouter"]
    doomed = WorkerProcess(concurrency=2, env=worker_env(apis), queue=f"{SHARED}-doomed", args=THREADS).wait_ready()
    try:
        api.slow(CHAT["openrouter"], 30)
        send("held forever", queue=f"{SHARED}-doomed")
        deadline = time.monotonic() + 30
        while not api.calls(CHAT["openrouter"]):
            assert time.monotonic() < deadline, doomed.log_text()[-3000:]
            time.sleep(0.05)
        api.delays.clear()
        os.killpg(doomed.proc.pid, signal.SIGKILL)  # the whole worker, its slot still taken in Redis
        killed = time.monotonic()
    finally:
        doomed.stop()
    result = run("next")
    assert result["metadata"]["candidate"]["index"] == 1
    skipped, served = result["metadata"]["attempts"]
    assert skipped["skipped"] == "concurrency" and served["error"] is None
    assert served["waited_ms"] > 0
    second = api.calls(CHAT["openrouter"])[1]
    assert second.at > killed  # called only once the dead worker's lease lapsed


# -- strategies ----------------------------------------------------------------------------------------
def test_weighted_follows_the_weights_and_equal_weights_take_turns(workers, apis, urls):
    write_routes({"chat": {"strategy": "weighted", "candidates": [cand(urls, "openrouter", weight=3),
                                                                  cand(urls, "together", weight=1)]}})
    counts = served_by(run_many(200))
    # Expected share 0.75; the standard deviation of 200 draws is 0.031, so +-0.1 is over 3 of them.
    assert abs(counts[1] / 200 - 0.75) <= 0.1, counts

    write_routes({"chat": {"strategy": "weighted", "candidates": [cand(urls, "openrouter"), cand(urls, "together"),
                                                                  cand(urls, "xai")]}})
    assert served_by(run_many(90)) == {1: 30, 2: 30, 3: 30}  # one cluster-wide turn counter: exact


def test_least_busy_balances_calls_in_flight(workers, apis, urls):
    write_routes({"chat": {"strategy": "least-busy", "candidates": [cand(urls, "openrouter"), cand(urls, "together")]}})
    for vendor in ("openrouter", "together"):
        apis[vendor].slow(CHAT[vendor], 0.1)
    counts = served_by(run_many(100))
    assert abs(counts[1] / 100 - 0.5) <= 0.15, counts  # equal stand-ins: an even split (3 standard deviations)

    apis["openrouter"].slow(CHAT["openrouter"], 0.4)
    apis["together"].slow(CHAT["together"], 0.0)
    counts = served_by(run_many(100))
    assert counts[2] / 100 >= 0.7, counts  # the slow one holds its calls longer: it gets fewer


def test_latency_prefers_the_faster_candidate(workers, apis, urls):
    write_routes({"chat": {"strategy": "latency", "candidates": [cand(urls, "openrouter"), cand(urls, "together")]}})
    apis["openrouter"].slow(CHAT["openrouter"], 0.2)
    results = [run(f"job {i}") for i in range(16)]
    assert {r["metadata"]["candidate"]["index"] for r in results[:4]} == {1, 2}  # each measured once first
    assert [r["metadata"]["candidate"]["index"] for r in results[-8:]] == [2] * 8


def test_cost_prefers_the_cheaper_candidate_and_ties_go_in_order(workers, apis, urls):
    # Together's /models prices this model at $0.88/M tokens; X.AI lists grok-3-mini at $0.30/M in, $0.50/M out.
    write_routes({"chat": {"strategy": "cost", "candidates": [cand(urls, "together"), cand(urls, "xai")]}})
    results = [run(f"job {i}") for i in range(3)]
    assert served_by(results) == {2: 3}
    cost = results[0]["asset"]["metadata"]["cost"]
    usage = results[0]["asset"]["metadata"]["usage"]
    assert cost["usd"] == pytest.approx(usage["prompt_tokens"] * 0.3e-6 + usage["completion_tokens"] * 0.5e-6)
    assert cost["estimated_usd"] > cost["usd"] > 0  # the estimate assumes the default output allowance

    same = {"prompt": 1e-6, "completion": 1e-6}
    write_routes({"chat": {"strategy": "cost", "candidates": [cand(urls, "together", pricing=same),
                                                              cand(urls, "xai", pricing=same)]}})
    assert served_by([run("tie")]) == {1: 1}


# -- cost and budgets --------------------------------------------------------------------------------
def test_a_route_budget_refuses_a_job_before_any_call(workers, apis, urls):
    from mediaconduit_worker.errors import BudgetExceededError
    from mediaconduit_worker.worker.limits import get_state

    write_routes({"chat": {"budget_usd": 0.00001, "candidates": [cand(urls, "openrouter")]}})
    with pytest.raises(BudgetExceededError, match=r"route 'chat': .*candidate 1 .* estimated cost \$0\.000154 exceeds "
                                                  r"the \$0\.000010 left of the \$0\.000010 budget of route:chat"):
        run("Hello")
    assert apis["openrouter"].calls(CHAT["openrouter"]) == []

    # Spend is kept per route: OpenRouter reports each call's cost ($0.0000123 from its stand-in).
    write_routes({"chat": {"budget_usd": 0.0002, "candidates": [cand(urls, "openrouter")]}})
    results = [run(f"job {i}") for i in range(4)]
    for r in results:
        cost = r["asset"]["metadata"]["cost"]
        assert (cost["usd"], cost["total"], cost["source"]) == (0.0000123, 0.0000123, "api")
        assert cost["estimated_usd"] == pytest.approx(2 * 0.15e-6 + 256 * 0.6e-6)  # "job 0": 5 characters, 2 tokens
    spent, held = get_state().spend("route:chat")
    assert (spent, held) == (pytest.approx(4 * 0.0000123), 0.0)
    # $0.0000492 spent + the $0.000154 estimate is over $0.0002: refused, still before any call.
    with pytest.raises(BudgetExceededError, match=r"spent \$0\.000049"):
        run("one more")
    assert len(apis["openrouter"].calls(CHAT["openrouter"])) == 4


def test_a_batch_budget_is_never_overrun_and_its_spend_is_reported(workers, apis, urls):
    from mediaconduit_worker.batch import Batch

    # Together prices the model at $0.88/M tokens. Each job is estimated at 12 tokens (4 in, 8 allowed
    # out): $0.00001056; the stand-in's replies use 7: $0.00000616. $0.000035 covers four such jobs.
    budget, per_job = 0.000035, 7 * 0.88e-6
    batch = Batch.of(urls["together"], MODELS["together"], {"capability": BUDGET_QUEUE, "maxOutputTokens": 8},
                     budget_usd=budget)
    for i in range(10):
        batch.add(f"item number {i}")
    run_ = batch.submit()
    seen = []
    items = list(run_.iter_results(timeout=120, on_progress=seen.append))
    ok = [i for i in items if i.status == "SUCCESS"]
    refused = [i for i in items if i.status == "FAILURE"]
    assert len(ok) == 4 and len(refused) == 6
    assert all("BudgetExceededError" in i.error and "refused before any call" in i.error for i in refused)
    assert len(apis["together"].calls(CHAT["together"])) == 4
    spent = run_.spent_usd()
    assert spent == pytest.approx(4 * per_job) and spent <= budget
    assert seen[-1].spent_usd == pytest.approx(spent) and f"spent ${spent:.6f} of $0.000035" in str(seen[-1])
    from mediaconduit_worker.batch.summary import batch_summary

    # The summary callback's code, run here (it goes to the default queue, which these workers do not serve).
    summary = batch_summary.apply(args=(batch.id, [j.ids for j in run_.jobs])).get()
    assert (summary["succeeded"], summary["failed"], summary["spent_usd"]) == (4, 6, pytest.approx(spent))


def test_a_forged_batch_header_fails_its_job_and_charges_no_batch(workers, apis, urls, monkeypatch):
    """A job that puts a batch's header on itself (unsigned, signed for another job, or signed with another
    installation's secret) would spend that batch's budget: it fails, naming the header, before any call."""
    from mediaconduit_worker import transform
    from mediaconduit_worker.batch import Batch
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.errors import InvalidInputError
    from mediaconduit_worker.settings import get_settings
    from mediaconduit_worker.worker.headers import BATCH_HEADER
    from mediaconduit_worker.worker.limits import get_state
    from mediaconduit_worker.worker.signing import sign_batch_header

    victim = Batch.of(urls["together"], MODELS["together"], {"capability": BUDGET_QUEUE, "maxOutputTokens": 8},
                      budget_usd=1.0)
    victim.add("the victim's item")
    honest = sign_batch_header(victim.id, 1.0, next(iter(victim.jobs)))  # the victim job's own header
    monkeypatch.setenv("MEDIACONDUIT_INSTALLATION_SECRET", "another installation's secret")
    get_settings.cache_clear()
    elsewhere = sign_batch_header(victim.id, 1.0, "foreign-3")
    monkeypatch.delenv("MEDIACONDUIT_INSTALLATION_SECRET")
    get_settings.cache_clear()
    forged = {"foreign-1": {"id": victim.id, "budget_usd": 1.0}, "foreign-2": honest, "foreign-3": elsewhere}
    args = ("spend it", urls["together"], MODELS["together"], {"capability": BUDGET_QUEUE, "maxOutputTokens": 8})
    try:
        sent = {task_id: transform.apply_async(args, task_id=task_id, queue=BUDGET_QUEUE, headers={BATCH_HEADER: h})
                for task_id, h in forged.items()}
    finally:
        app.amqp.queues.pop(BUDGET_QUEUE, None)
    problems = {"foreign-1": "is not signed", "foreign-2": "has a signature this installation did not make for this job",
                "foreign-3": "has a signature this installation did not make for this job"}
    for task_id, result in sent.items():
        with pytest.raises(InvalidInputError, match=f"message header 'mediaconduit_batch' {problems[task_id]}: .*nothing "
                                                    "was called or charged"):
            result.get(timeout=60)
    assert apis["together"].calls(CHAT["together"]) == []
    assert get_state().spend(f"batch:{victim.id}") == (0.0, 0.0)
    assert "another installation's secret" not in "".join(w.log_text() for w in workers)
    # The worker serves the batch's own job next, charged to the batch.
    (item,) = victim.submit().results(timeout=60)
    assert item.status == "SUCCESS" and apis["together"].calls(CHAT["together"])
    assert get_state().spend(f"batch:{victim.id}")[0] == pytest.approx(7 * 0.88e-6)


def test_cli_batch_budget_and_progress_show_the_spend(workers, apis, urls, tmp_path):
    from click.testing import CliRunner

    from mediaconduit_worker.cli import main

    items = tmp_path / "in.jsonl"
    items.write_text("".join(f'"line number {i}"\n' for i in range(6)))
    out = tmp_path / "out.jsonl"
    args = ["batch", str(items), "--provider", urls["together"], "--model", MODELS["together"],
            "--capability", BUDGET_QUEUE, "--options", '{"maxOutputTokens": 8}', "--budget", "0.000025", "--out", str(out)]
    res = CliRunner().invoke(main, args, catch_exceptions=False, env={"COLUMNS": "200"})
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    ok = [line for line in lines if line["status"] == "SUCCESS"]
    assert res.exit_code == 1 and f"error: {6 - len(ok)} of 6 jobs failed" in res.output, res.output
    assert 1 <= len(ok) < 6 and all("BudgetExceededError" in line["error"] for line in lines if line not in ok)
    spent = sum(line["result"]["asset"]["metadata"]["cost"]["usd"] for line in ok)
    assert spent <= 0.000025
    assert f"succeeded {len(ok)}, failed {6 - len(ok)}" in res.output and f"spent ${spent:.6f} of $0.000025" in res.output


# -- watching -------------------------------------------------------------------------------------------
def test_routes_health_shows_state_traffic_latency_spend_and_a_probe(workers, apis, urls):
    write_routes({"chat": {"allowed_fails": 1, "cooldown": 60, "budget_usd": 1.0,
                           "candidates": [cand(urls, "openrouter"), cand(urls, "together", max_concurrency=4)]}})
    apis["openrouter"].script("POST", CHAT["openrouter"], Reply(503, {"error": {"message": "down"}}))
    for i in range(3):
        run(f"job {i}")
    env = {**os.environ, **worker_env(apis)}
    out = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "routes", "health", "--json"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (chat,) = [r for r in json.loads(out.stdout) if r["route"] == "chat"]
    assert (chat["strategy"], chat["capability"], chat["budget_usd"]) == ("fallback", "text-to-text", 1.0)
    first, second = chat["candidates"]
    assert first["state"] == "cooldown" and first["cooldown_until"]
    assert (first["calls_5m"], first["failures_5m"]) == (1, 1) and "HTTP 503" in first["last_error"]
    assert second["state"] == "ok" and (second["calls_5m"], second["failures_5m"]) == (3, 0)
    assert second["in_flight"] == 0 and second["max_concurrency"] == 4 and second["p50_ms"] > 0
    assert second["spent_usd"] == pytest.approx(chat["spent_usd"]) and chat["spent_usd"] > 0
    assert first["probe"]["ok"] and second["probe"]["ok"]  # both APIs answer their model listing
    assert "models listed" in second["probe"]["detail"]

    apis["together"].always("GET", "/together/v1/models", Reply(500, {"error": {"message": "listing broke"}}))
    table = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "routes", "health"],
                           env={**env, "COLUMNS": "250"}, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "route chat (fallback, text-to-text)" in table.stdout and "cooldown until" in table.stdout
    assert "FAIL" in table.stdout and "HTTP 500" in table.stdout and "failing" in table.stdout


def test_flowers_api_takes_a_routed_job_and_shows_its_route_and_serving_candidate(workers, apis, urls):
    """Flower shows a job's arguments from its task-sent event and its result as the task-succeeded
    event's repr, which Celery cuts at 1024 characters: ``route`` and ``candidate`` lead the result's
    metadata so they survive the cut, however long the output."""
    import httpx
    from celery.result import AsyncResult
    from support.flower import running_flower

    write_routes({"chat": {"allowed_fails": 1000, "candidates": [cand(urls, "openrouter"), cand(urls, "together")]}})
    apis["openrouter"].always("POST", CHAT["openrouter"], Reply(503, {"error": {"message": "overloaded"}}))
    auth = ("ops", "flower-pw")
    with running_flower(":".join(auth)) as (base, _, _):
        body = {"args": ["Hello " * 200, "route:chat", None, {}], "queue": SHARED}
        deadline = time.monotonic() + 60
        record: dict = {}
        # Flower's event receiver binds its queue a moment after its HTTP side answers: events sent before
        # that are lost to it. Send until it has seen one whole job.
        while record.get("state") != "SUCCESS" or not record.get("name"):
            assert time.monotonic() < deadline, record
            reply = httpx.post(f"{base}/api/task/async-apply/mediaconduit.transform", json=body, auth=auth, timeout=10)
            assert reply.status_code == 200, reply.text
            task_id = reply.json()["task-id"]
            result = AsyncResult(task_id).get(timeout=60)
            for _ in range(20):
                record = httpx.get(f"{base}/api/task/info/{task_id}", auth=auth, timeout=5).json()
                if record.get("state") == "SUCCESS" and record.get("name"):
                    break
                time.sleep(0.25)
    assert result["metadata"]["candidate"]["index"] == 2
    assert json.loads(record["args"])[1] == "route:chat" and record["routing_key"] == SHARED
    shown = json.loads(record["result"])["metadata"]  # the summary, as JSON
    assert shown["route"] == "chat"
    assert shown["candidate"] == {"index": 2, "provider": urls["together"], "model": MODELS["together"]}
