"""What a job's event stream costs: the echo transform's round trip with its stream written (a job sent
with ``EVENTS_HEADER``, as the gateway sends every job) and with event streams off
(``MEDIACONDUIT_EVENTS_MAXLEN=0``), beside a raw Celery task, and one event written from this process
beside a Redis ``PING`` round trip (the least a call to Redis costs). Round trips alternate between the
three workers, so the machine's load drifts through all of them alike.

    python bench/bench_events.py [--jobs 300] [--events 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RAW_QUEUE, git_mirror, isolated_environment, percentile, row, start_celery, stop_process

HOME = isolated_environment()
ON_QUEUE, OFF_QUEUE = "events-on", "events-off"


def per_event(count: int) -> tuple[float, float]:
    """Microseconds per ``status`` event written from here, and per ``PING`` on the same client."""
    from mediaconduit_worker.worker import events
    from mediaconduit_worker.worker.redis_state import state_redis

    client = state_redis()
    for _ in range(100):
        events.status("bench-warm", events.RUNNING, attempt=0)
        client.ping()
    t = time.perf_counter()
    for n in range(count):
        events.status(f"bench-{n % 50}", events.RUNNING, attempt=0)
    written = (time.perf_counter() - t) / count * 1e6
    t = time.perf_counter()
    for _ in range(count):
        client.ping()
    return written, (time.perf_counter() - t) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    from celery import signature

    from mediaconduit_worker import transform
    from mediaconduit_worker.worker.headers import EVENTS_HEADER

    url = git_mirror("echo-provider")
    workers = [start_celery("mediaconduit_worker.celery_app", ON_QUEUE, 1, name="events-on"),
               start_celery("mediaconduit_worker.celery_app", OFF_QUEUE, 1, name="events-off",
                            env={"MEDIACONDUIT_EVENTS_MAXLEN": "0"}),
               start_celery("raw_app", RAW_QUEUE, 1)]
    sends = {
        "echo, event streams on": lambda: transform.apply_async(("hello", url, "echo"), queue=ON_QUEUE,
                                                                headers={EVENTS_HEADER: True}),
        "echo, event streams off": lambda: transform.apply_async(("hello", url, "echo"), queue=OFF_QUEUE),
        "raw Celery task": lambda: signature("bench.raw", args=("hello",), queue=RAW_QUEUE).apply_async(),
    }
    try:
        for send in sends.values():
            for _ in range(20):
                send().get(timeout=60)
        times: dict[str, list[float]] = {k: [] for k in sends}
        for _ in range(args.jobs):
            for label, send in sends.items():
                t = time.perf_counter()
                send().get(timeout=60)
                times[label].append((time.perf_counter() - t) * 1000)
    finally:
        for w in workers:
            stop_process(w)
    print(f"round trip, one job at a time, {args.jobs} jobs each, interleaved (prefork -c 1 workers):")
    for label, values in times.items():
        row(f"{label} p50", percentile(values, 50), "ms")
        row(f"{label} p99", percentile(values, 99), "ms")
    on, off = percentile(times["echo, event streams on"], 50), percentile(times["echo, event streams off"], 50)
    row("events' share of the echo round trip (p50)", on - off, "ms", f"({(on - off) / off * 100:+.1f}%)")
    written, ping = per_event(args.events)
    print(f"one event written from this process, {args.events} times:")
    row("status event (EVALSHA of events_add.lua)", written, "us")
    row("Redis PING round trip (yardstick)", ping, "us", f"(event/PING {written / ping:.2f}x)")


if __name__ == "__main__":
    main()
