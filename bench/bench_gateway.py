"""What the gateway adds to one job: the round trip of an echo job through ``mediaconduit gateway`` (a real
gateway process, a real worker, embedded Redis) against ``transform.delay(...).get()`` on the same worker
(the yardstick), in one run. Two HTTP paths: ``POST /v1/jobs`` with ``Prefer: wait=N`` (one request), and
``POST /v1/jobs`` then ``GET /v1/jobs/{id}/events`` read until the final status. The three kinds take turns
job by job, in rotating order, so the machine's load drifts through all of them alike.

    python bench/bench_gateway.py [--jobs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
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

HOME = isolated_environment()
WAIT = 30
"""N of ``Prefer: wait=N``: far longer than an echo job takes, so every answer is the finished job."""


def job_senders(url: str, client: Any) -> dict[str, Callable[[], None]]:
    """One echo job each, sent and waited for: ``delay`` (the yardstick), ``wait`` and ``events`` (HTTP)."""
    from mediaconduit_worker import transform

    body = {"input": "hello", "provider": url, "model": "echo"}

    def delay() -> None:
        transform.delay("hello", url, "echo").get(timeout=60)

    def wait() -> None:
        answer = client.post("/v1/jobs", json=body, headers={"Prefer": f"wait={WAIT}"})
        answer.raise_for_status()
        job = answer.json()
        if job["status"] != "succeeded":
            raise SystemExit(f"error: job {job['id']} ended {job['status']}: {job.get('error')}")

    def events() -> None:
        created = client.post("/v1/jobs", json=body)
        created.raise_for_status()
        job_id = created.json()["id"]
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            stream.raise_for_status()
            kind = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "status":
                    status = json.loads(line[6:])["status"]
                    if status == "succeeded":
                        return
                    if status in ("failed", "canceled", "expired"):
                        raise SystemExit(f"error: job {job_id} ended {status}: {line[6:]}")
        raise SystemExit(f"error: the events of job {job_id} ended before its final status")

    return {"delay": delay, "wait": wait, "events": events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="round trips timed of each kind (at least 2)")
    args = parser.parse_args()
    if args.jobs < 2:
        parser.error("--jobs must be at least 2")
    import httpx

    from mediaconduit_worker.gateway.tenants import KeyStore
    from mediaconduit_worker.worker.redis_state import state_redis

    url = git_mirror("echo-provider")
    _, key, _ = KeyStore(state_redis()).create(f"bench-{uuid.uuid4().hex[:6]}")
    port = free_port()
    worker = start_celery("mediaconduit_worker.celery_app", ECHO_QUEUE)
    gateway = start_gateway(port, env={"MEDIACONDUIT_PROVIDER_ALLOW": url, "MEDIACONDUIT_GATEWAY_WEBHOOKS": "false"},
                            log=HOME / "gateway.log")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=90)
    send = job_senders(url, client)
    times: dict[str, list[float]] = {kind: [] for kind in send}
    try:
        for _ in range(20):  # warm up: provider loaded in both pool processes, connections open
            for one in send.values():
                one()
        kinds = list(send)
        for i in range(args.jobs):
            for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
                t = time.perf_counter()
                send[kind]()
                times[kind].append((time.perf_counter() - t) * 1000)
    finally:
        client.close()
        stop_process(gateway)
        stop_process(worker)
    p50 = {kind: percentile(t, 50) for kind, t in times.items()}
    p99 = {kind: percentile(t, 99) for kind, t in times.items()}
    print(f"echo job round trips, {args.jobs} of each kind taking turns, one gateway process, worker prefork -c 2, "
          f"embedded Redis, {os.cpu_count()} cores:")
    row("transform.delay(...).get() p50 (yardstick)", p50["delay"], "ms")
    row("transform.delay(...).get() p99 (yardstick)", p99["delay"], "ms")
    row(f"POST /v1/jobs, Prefer: wait={WAIT} p50", p50["wait"], "ms", f"({p50['wait'] - p50['delay']:+.2f} ms)")
    row(f"POST /v1/jobs, Prefer: wait={WAIT} p99", p99["wait"], "ms", f"({p99['wait'] - p99['delay']:+.2f} ms)")
    row("POST /v1/jobs + GET .../events to succeeded p50", p50["events"], "ms",
        f"({p50['events'] - p50['delay']:+.2f} ms)")
    row("POST /v1/jobs + GET .../events to succeeded p99", p99["events"], "ms",
        f"({p99['events'] - p99['delay']:+.2f} ms)")


if __name__ == "__main__":
    main()
