"""Streamed outputs through the queue against the stand-in called directly: a stand-in OpenAI API streams
``--tokens`` tokens ``--gap`` seconds apart (tests/support/standin_apis.py, OpenAI's SSE format); each
stream is read once straight from it (httpx, the yardstick) and once through Redis and a worker
(``transform.stream``: the OpenAI provider's SSE client, the chunk writer, ``XREAD``), alternately, so the
machine's load drifts through both alike. Printed: time to the first token, the gap between tokens, and
the Redis memory one finished stream holds. Then streams in flight on the default I/O pool: ``mediaconduit
worker --capability text-to-text`` as a deployment starts it (its threads pool, 128 slots over one process
per core), ``--in-flight`` streams sent at once (default: the pool's slots), each read by a thread of this
process; printed: the most the stand-in answered at once, and the time to the first token and each stream's
length at that concurrency, beside the one-at-a-time figures above.

    python bench/bench_streaming.py [--streams 10] [--tokens 200] [--gap 0.02] [--in-flight N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, cpu_seconds, isolated_environment, percentile, row, start_celery, stop_process

HOME = isolated_environment()
sys.path.insert(0, str(REPO / "tests"))
from support.standin_apis import KEYS, Reply, StandInAPIs, chat_events  # noqa: E402  (after the environment)

CHAT = "/openai/v1/chat/completions"
MODEL = "gpt-4o-mini"
QUEUE = "streaming-bench"


def direct(apis: StandInAPIs, client: Any) -> tuple[float, list[float]]:
    """Seconds to the first content token, and the gaps between tokens, read straight from the stand-in on a
    warm ``httpx.Client`` (as the provider's own client is)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
    start = time.perf_counter()
    stamps: list[float] = []
    with client.stream("POST", apis.url + CHAT, json=body, headers={"Authorization": f"Bearer {KEYS['openai']}"},
                      timeout=60) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])]


def queued(url: str) -> tuple[float, list[float], str]:
    """The same through a worker: seconds to the first chunk, the gaps between chunks, the job's id."""
    from mediaconduit_worker import transform

    start = time.perf_counter()
    stamps: list[float] = []
    task_id = ""
    for chunk in transform.stream("x", url, MODEL, queue=QUEUE, timeout=120):
        stamps.append(time.perf_counter())
        task_id = chunk.task_id
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])], task_id


def in_flight(apis: StandInAPIs, url: str, count: int) -> tuple[int, list[float], list[float], float]:
    """``count`` streams through the capability's queue at once: the most the stand-in answered at once,
    each stream's time to its first chunk and its length (first chunk to last, ms), and the wall time (s)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from mediaconduit_worker import transform

    start = Barrier(count)

    def one(_: int) -> tuple[float, float]:
        start.wait()
        sent = time.perf_counter()
        stamps = [time.perf_counter() for _ in transform.stream("x", url, MODEL, timeout=600)]
        return (stamps[0] - sent) * 1000, (stamps[-1] - stamps[0]) * 1000

    with apis.lock:
        apis.max_active[CHAT] = apis.active[CHAT]
    began = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        timings = list(pool.map(one, range(count)))
    return apis.max_active[CHAT], [t[0] for t in timings], [t[1] for t in timings], time.perf_counter() - began


def redis_cpu() -> float:
    """CPU seconds the Redis server has used (``INFO cpu``)."""
    from mediaconduit_worker.worker.redis_state import state_redis

    info = state_redis().info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--in-flight", type=int, default=None, help="streams sent at once (default: the pool's slots)")
    args = parser.parse_args()
    import os

    from bench_remote import git_url
    from common import start_io_pool

    from mediaconduit_worker.worker import events
    from mediaconduit_worker.worker.pools import plan_pools
    from mediaconduit_worker.worker.redis_state import state_redis

    (plan,) = plan_pools(["text-to-text"], None, None, None)
    count = args.in_flight or plan.concurrency or 1
    if count < 1:
        raise SystemExit(f"error: --in-flight must be at least 1, got {count}")

    apis = StandInAPIs().start()
    words = " ".join(f"t{k}" for k in range(args.tokens))
    apis.always("POST", CHAT, Reply(events=chat_events(MODEL, words), event_delay=args.gap))
    os.environ.update(apis.env())
    url = git_url(REPO / "providers" / "openai-provider")
    worker = start_celery("mediaconduit_worker.celery_app", QUEUE, 8, ["-P", "threads"], env=apis.env())
    first: dict[str, list[float]] = {"direct": [], "queued": []}
    gaps: dict[str, list[float]] = {"direct": [], "queued": []}
    import httpx

    client = httpx.Client()
    try:
        queued(url)  # warm: provider loaded, connections open
        direct(apis, client)
        for _ in range(args.streams):
            ttft, between = direct(apis, client)
            first["direct"].append(ttft * 1000)
            gaps["direct"] += [g * 1000 for g in between]
            ttft, between, task_id = queued(url)
            first["queued"].append(ttft * 1000)
            gaps["queued"] += [g * 1000 for g in between]
        memory = state_redis().memory_usage(events.stream_key(task_id)) or 0
        entries = state_redis().xlen(events.stream_key(task_id))
        stop_process(worker)
        worker = start_io_pool("text-to-text")
        in_flight(apis, url, plan.processes * 4)  # warm: every process loads the provider on its first job
        cpu = cpu_seconds(worker.pid), time.process_time(), redis_cpu()
        most, ttft, lengths, wall = in_flight(apis, url, count)
        worker_cpu, bench_cpu, server_cpu = (cpu_seconds(worker.pid) - cpu[0], time.process_time() - cpu[1],
                                             redis_cpu() - cpu[2])
    finally:
        stop_process(worker)
        client.close()
        apis.stop()
    print(f"{args.streams} streams of {args.tokens} tokens {args.gap * 1000:.0f} ms apart, embedded Redis, "
          f"{os.cpu_count()} cores, worker -P threads -c 8:")
    for label in ("direct", "queued"):
        row(f"{label}: time to first token p50", percentile(first[label], 50), "ms")
        row(f"{label}: gap between tokens p50", percentile(gaps[label], 50), "ms")
        row(f"{label}: gap between tokens p99", percentile(gaps[label], 99), "ms")
    added = percentile(first["queued"], 50) - percentile(first["direct"], 50)
    row("time to first token added by the queue (p50)", added, "ms", "(aim: <= +20 ms)")
    row("gap added between tokens (mean)", statistics.mean(gaps["queued"]) - statistics.mean(gaps["direct"]), "ms")
    row(f"Redis memory of one finished stream ({entries} entries)", memory / 1024, "KiB")
    print(f"{count} streams sent at once to `mediaconduit worker --capability text-to-text` ({plan.pool}, "
          f"{plan.concurrency} slots over {plan.processes} processes), in {wall:.1f} s:")
    row("streams the stand-in answered at once (most)", most, "")
    row(f"time to first token at {count} in flight p50", percentile(ttft, 50), "ms")
    row(f"time to first token at {count} in flight p99", percentile(ttft, 99), "ms")
    row("stream length, first token to last, p50", percentile(lengths, 50), "ms",
        f"(the stand-in's own: {args.tokens - 1} gaps of {args.gap * 1000:.0f} ms = {(args.tokens - 1) * args.gap * 1000:.0f} ms)")
    row("stream length, first token to last, p99", percentile(lengths, 99), "ms")
    row("CPU of the worker's processes meanwhile", worker_cpu / wall * 100, "% core")
    row("CPU of this process (stand-in and readers)", bench_cpu / wall * 100, "% core")
    row("CPU of the Redis server", server_cpu / wall * 100, "% core")


if __name__ == "__main__":
    main()
