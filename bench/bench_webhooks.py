"""How fast the gateway's dispatcher sends webhooks: echo jobs with a webhook to a receiving HTTP server on
loopback (admitted by an explicit ``MEDIACONDUIT_WEBHOOK_ALLOW`` prefix naming 127.0.0.1 and its port), a
real gateway process, a real worker, embedded Redis. Measured in one run:

- deliveries per second from a backlog, in ``--rounds`` rounds: ``--jobs`` jobs run while no dispatcher
  runs (a gateway with ``MEDIACONDUIT_GATEWAY_WEBHOOKS=false`` creates them), so their events (an echo job's
  ``start``, ``output`` and ``completed``) wait in the outbox; then a gateway with its dispatcher starts and
  sends them all, timed from the first arrival to the last; right after, the same bodies are POSTed to the
  same receiver by a plain ``httpx.AsyncClient`` in a process of its own, signed the same way, with as many
  in flight as a dispatcher allows (the yardstick);
- event-to-delivery latency: ``--live`` jobs created one at a time while the dispatcher runs (the next once
  the last one's webhooks have all come, so none waits behind another), from the event's stream id (the
  Redis server's clock, in ms) to the receiver's arrival; beside one direct POST's round trip, one at a time
  (the yardstick). A burst faster than the backlog's rate waits its turn on top of this.

Every delivery is checked with the ``standardwebhooks`` package and the tenant's secret, and counted once
per ``webhook-id``.

    python bench/bench_webhooks.py [--jobs 200] [--rounds 3] [--live 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ECHO_QUEUE,
    free_port,
    git_mirror,
    isolated_environment,
    percentile,
    row,
    start_celery,
    start_gateway,
    stop_process,
)


@dataclass
class Arrival:
    at: float
    """``time.time()`` when the request was read whole."""
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on uvicorn (one event loop on a thread of this process) that answers every POST 200 at
    once and keeps what it got, with when."""

    def __init__(self) -> None:
        import uvicorn

        self.got: list[Arrival] = []
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, lifespan="off", interface="asgi3", access_log=False,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        end = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > end or not self.thread.is_alive():
                raise SystemExit(f"error: the receiver on port {port} did not start")
            time.sleep(0.02)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.got.append(Arrival(time.time(), scope["path"], headers, body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def at(self, path: str) -> list[Arrival]:
        return [a for a in list(self.got) if a.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 300) -> list[Arrival]:
        end = time.monotonic() + timeout
        while len(got := self.at(path)) < count:
            if time.monotonic() > end:
                raise SystemExit(f"error: {path} got {len(got)} of {count} webhooks within {timeout:g} s")
            time.sleep(0.05)
        return got


def post_directly(url: str, secret: str, bodies: list[bytes], sequential: int) -> list[float]:
    """The yardstick, run in a process of its own: ``sequential`` signed POSTs one at a time to ``url``/seq
    (their round trips in ms, returned), then every body of ``bodies`` to ``url``/all with as many in
    flight as a dispatcher allows, on one client as the dispatcher's."""
    import httpx

    from mediaconduit_worker.gateway.dispatcher import IN_FLIGHT
    from mediaconduit_worker.gateway.webhooks import signature

    def headers(webhook_id: str, body: bytes) -> dict[str, str]:
        stamp = int(time.time())
        return {"content-type": "application/json", "user-agent": "mediaconduit-webhooks", "webhook-id": webhook_id,
                "webhook-timestamp": str(stamp), "webhook-signature": signature(secret, webhook_id, stamp, body)}

    async def run() -> list[float]:
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
        async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=30) as client:
            trips: list[float] = []
            for k in range(sequential):
                body = bodies[k % len(bodies)]
                t = time.perf_counter()
                (await client.post(url + "/seq", content=body, headers=headers(f"whk_seq_{k}", body))).raise_for_status()
                trips.append((time.perf_counter() - t) * 1000)
            todo = iter(enumerate(bodies))

            async def sender() -> None:
                for k, body in todo:
                    (await client.post(url + "/all", content=body, headers=headers(f"whk_all_{k}", body))).raise_for_status()

            await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
            return trips

    return asyncio.run(run())


def delivered(arrivals: list[Arrival], secret: str, expected: int, where: str) -> list[Arrival]:
    """The arrivals, each verified as Standard Webhooks does and counted once per ``webhook-id``; exits naming
    ``where`` when one does not verify or any is missing."""
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    hook = Webhook(secret)
    for a in arrivals:
        try:
            hook.verify(a.body, a.headers)
        except WebhookVerificationError as exc:
            raise SystemExit(f"error: {where}: webhook {a.headers.get('webhook-id')!r} does not verify: {exc}") from None
    ids = {a.headers["webhook-id"] for a in arrivals}
    if len(ids) != expected:
        raise SystemExit(f"error: {where}: {len(ids)} distinct webhooks of {expected} expected ({len(arrivals)} POSTs)")
    return arrivals


def rate(arrivals: list[Arrival]) -> float:
    """Deliveries per second from the first arrival to the last."""
    times = sorted(a.at for a in arrivals)
    return (len(times) - 1) / (times[-1] - times[0])


@dataclass
class Bench:
    """What every phase uses: the receiver, the provider, the tenant and the gateways' settings."""

    receiver: Receiver
    url: str
    key: str
    secret: str
    env: dict[str, str]
    home: Path

    def gateway(self, webhooks: bool) -> tuple[Any, Any]:
        """A gateway process (its dispatcher on or off) and an ``httpx.Client`` with the tenant's key."""
        import httpx

        port = free_port()
        proc = start_gateway(port, env={**self.env, "MEDIACONDUIT_GATEWAY_WEBHOOKS": str(webhooks).lower()},
                             log=self.home / f"gateway-{port}.log")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {self.key}"},
                              timeout=90)
        return proc, client

    def create(self, client: Any, path: str, count: int) -> list[str]:
        """``count`` echo jobs with their webhook at the receiver's ``path``; their ids."""
        body = {"input": "hello", "provider": self.url, "model": "echo", "webhook": self.receiver.url + path}
        ids = []
        for _ in range(count):
            answer = client.post("/v1/jobs", json=body)
            answer.raise_for_status()
            ids.append(answer.json()["id"])
        return ids

    def backlog(self, path: str, jobs: int) -> Counter[str]:
        """``jobs`` jobs run to the end with no dispatcher running: the outbox's events by kind once it holds
        a ``completed`` of each (the last of a job's events, written just after its result is stored)."""
        from mediaconduit_worker.worker.events import OUTBOX
        from mediaconduit_worker.worker.redis_state import state_redis

        proc, client = self.gateway(webhooks=False)
        try:
            for job_id in self.create(client, path, jobs):
                client.get(f"/v1/jobs/{job_id}", headers={"Prefer": "wait=30"}).raise_for_status()
            end = time.monotonic() + 60
            while (kinds := Counter(f["event"] for _, f in state_redis().xrange(OUTBOX)))["completed"] < jobs:
                if time.monotonic() > end:
                    raise SystemExit(f"error: the outbox holds {dict(kinds)} after 60 s, not {jobs} completed")
                time.sleep(0.05)
        finally:
            client.close()
            stop_process(proc)
        if sum(kinds.values()) % jobs:
            raise SystemExit(f"error: the outbox holds {dict(kinds)}: not as many events of each of {jobs} jobs")
        return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs whose webhooks wait in the outbox, each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of a backlog sent, then sent directly")
    parser.add_argument("--live", type=int, default=100, help="jobs sent one at a time for the latency")
    args = parser.parse_args()
    if min(args.jobs, args.rounds, args.live) < 1:
        parser.error("--jobs, --rounds and --live must be at least 1")
    home = isolated_environment()
    from mediaconduit_worker.gateway.dispatcher import IN_FLIGHT
    from mediaconduit_worker.gateway.tenants import KeyStore
    from mediaconduit_worker.worker.redis_state import state_redis

    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    _, key, _ = KeyStore(state_redis()).create(tenant)
    secret = KeyStore(state_redis()).webhook_secret(tenant)
    receiver = Receiver()
    url = git_mirror("echo-provider")
    bench = Bench(receiver, url, key, secret, {"MEDIACONDUIT_PROVIDER_ALLOW": url,
                                               "MEDIACONDUIT_WEBHOOK_ALLOW": f"{receiver.url}/hook/"}, home)
    worker = start_celery("mediaconduit_worker.celery_app", ECHO_QUEUE)
    rates: dict[str, list[float]] = {"dispatcher": [], "direct": []}
    trips: list[float] = []
    posts = distinct = 0
    try:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            for r in range(args.rounds):
                kinds = bench.backlog(f"/hook/backlog/{r}", args.jobs)
                expected = sum(kinds.values())
                proc, client = bench.gateway(webhooks=True)
                try:
                    drained = receiver.wait_for(f"/hook/backlog/{r}", expected)
                    rates["dispatcher"].append(rate(delivered(drained, secret, expected, f"backlog {r}")))
                    trips += pool.submit(post_directly, f"{receiver.url}/hook/direct/{r}", secret,
                                         [a.body for a in drained], args.live if r == 0 else 0).result()
                    direct = receiver.wait_for(f"/hook/direct/{r}/all", expected)
                    rates["direct"].append(rate(delivered(direct, secret, expected, f"direct {r}")))
                    posts, distinct = posts + len(drained), distinct + expected
                    if r == args.rounds - 1:
                        per_job = expected // args.jobs
                        for k in range(args.live):  # one at a time: the latency of a dispatcher with nothing queued
                            bench.create(client, "/hook/live", 1)
                            receiver.wait_for("/hook/live", per_job * (k + 1))
                        live = delivered(receiver.at("/hook/live"), secret, per_job * args.live, "live")
                        posts, distinct = posts + len(live), distinct + per_job * args.live
                finally:
                    client.close()
                    stop_process(proc)
    finally:
        stop_process(worker)
        receiver.stop()
    latency = [(a.at - int(json.loads(a.body)["event"]["id"].split("-")[0]) / 1000) * 1000 for a in live]
    size = sum(len(a.body) for a in drained) / len(drained)
    ratios = [d / y for d, y in zip(rates["dispatcher"], rates["direct"])]
    print(f"webhooks of echo jobs ({', '.join(kinds)}; bodies {size / 1024:.1f} KiB), one gateway process's "
          f"dispatcher ({IN_FLIGHT} in flight), a uvicorn receiver on loopback, embedded Redis, {os.cpu_count()} "
          f"cores; median of {args.rounds} rounds of a {expected}-event backlog:")
    row("direct signed POSTs (yardstick)", statistics.median(rates["direct"]), "/s",
        f"(rounds: {', '.join(f'{x:.0f}' for x in rates['direct'])})")
    row("dispatcher sending the outbox's backlog", statistics.median(rates["dispatcher"]), "/s",
        f"(rounds: {', '.join(f'{x:.0f}' for x in rates['dispatcher'])}; {statistics.median(ratios):.2f}x direct)")
    row(f"one direct signed POST's round trip p50 ({args.live})", percentile(trips, 50), "ms", "(yardstick)")
    row("one direct signed POST's round trip p99", percentile(trips, 99), "ms")
    row(f"event to delivery p50 ({len(latency)} events, one job at a time)", percentile(latency, 50), "ms")
    row("event to delivery p99", percentile(latency, 99), "ms")
    row("dispatcher's webhooks verified (standardwebhooks)", distinct, "", f"(distinct ids, in {posts} POSTs)")


if __name__ == "__main__":
    main()
