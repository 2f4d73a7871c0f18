"""Streamed outputs through the queue against the stand-in called directly: a stand-in OpenAI API streams
``--tokens`` tokens ``--gap`` seconds apart (tests/support/standin_apis.py, OpenAI's SSE format); each
stream is read once straight from it (httpx, the yardstick) and once through Redis and a worker
(``transform.stream``: the OpenAI provider's SSE client, the chunk writer, ``XREAD``), alternately, so the
machine's load drifts through both alike. Printed: time to the first token, the gap between tokens, and
the Redis memory one finished stream holds.

    python bench/bench_streaming.py [--streams 10] [--tokens 200] [--gap 0.02]
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
from common import REPO, isolated_environment, percentile, row, start_celery, stop_process

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.02)
    args = parser.parse_args()
    import os

    from bench_remote import git_url

    from mediaconduit_worker.worker import events
    from mediaconduit_worker.worker.redis_state import state_redis

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


if __name__ == "__main__":
    main()
