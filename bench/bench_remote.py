"""Remote-API benchmark: the OpenRouter provider against a local stand-in answering in 500 ms, in one run.

* throughput: prefork ``-c 2`` against the default I/O pool (``mediaconduit worker --capability
  text-to-text``: threads, 128 slots shared by one process per core), each beside its ideal rate (slots /
  latency), and a raw Celery task making the same request on the same pools (yardstick);
* the I/O pool's memory (RSS, all its processes) after 1k and after 10k jobs;
* a cache-hit round trip (and the time the worker spent on it) against an uncached echo round trip;
* publishing a 10,000-job batch (one Redis round trip per chunk) against the same groups published
  message by message, Celery's default.

    python bench/bench_remote.py [--jobs 2000] [--prefork-jobs 200] [--rss-jobs 10000] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    RAW_QUEUE,
    REPO,
    isolated_environment,
    percentile,
    row,
    rss_mb,
    start_celery,
    start_io_pool,
    stop_process,
)

HOME = isolated_environment()
sys.path.insert(0, str(REPO / "tests"))
from support.standin_apis import StandInAPIs  # noqa: E402  (after the environment is set)

MODEL = "openai/gpt-4o-mini"


def git_url(folder: Path) -> str:
    """``folder`` as a one-commit bare repository (results and cache keys carry its pinned commit)."""
    root = Path(tempfile.mkdtemp(prefix="mc-bench-repo-"))
    work, bare = root / "work", root / f"{folder.name}.git"
    shutil.copytree(folder, work)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run([*git, *args], cwd=work, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return f"file://{bare}"


def run_batch(url: str, count: int, tag: str, on_done=None) -> float:
    """Jobs/s for ``count`` distinct jobs published as a batch and watched until all are final."""
    from mediaconduit_worker.batch import Batch

    batch = Batch.of(url, MODEL)
    for i in range(count):
        batch.add(f"{tag} {i}")
    t = time.perf_counter()
    results = list(batch.submit(resume=False).iter_results(poll_interval=0.1, timeout=3600, on_progress=on_done))
    elapsed = time.perf_counter() - t
    failed = [r for r in results if r.status != "SUCCESS"]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed, e.g. {failed[0].error}")
    return count / elapsed


def raw_rate(apis: StandInAPIs, count: int) -> float:
    """Jobs/s of the yardstick: a raw Celery task (same app settings) POSTing the same chat request."""
    from celery import group, signature

    from mediaconduit_worker.batch.states import fetch_states
    from mediaconduit_worker.celery_app import app

    url = f"{apis.url}/openrouter/api/v1/chat/completions"
    headers = {"Authorization": f"Bearer {apis.env()['OPENROUTER_API_KEY']}"}
    ids = [f"raw-{count}-{i}" for i in range(count)]
    t = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(0, count, 500):
            with producer.batch(max_size=2000):
                group(signature("bench.raw_http", args=(url, {"model": MODEL, "messages": [
                    {"role": "user", "content": f"raw {j}"}]}, headers), queue=RAW_QUEUE, task_id=ids[j])
                    for j in range(i, min(i + 500, count))).apply_async(producer=producer)
    pending = set(ids)
    while pending:
        states = fetch_states(app, list(pending))
        if any(s.state == "FAILURE" for s in states.values()):
            raise SystemExit("a raw yardstick task failed")
        pending = {i for i, s in states.items() if not s.final}
        time.sleep(0.1)
    return count / (time.perf_counter() - t)


def round_trips(send, count: int) -> tuple[float, list[dict]]:
    """p50 (ms) of ``count`` sequential send-and-wait round trips after a warm-up, and the results."""
    for _ in range(10):
        send().get(timeout=60)
    times, results = [], []
    for _ in range(count):
        t = time.perf_counter()
        results.append(send().get(timeout=60))
        times.append((time.perf_counter() - t) * 1000)
    return percentile(times, 50), results


def publish_rates(url: str, items: int) -> tuple[float, float]:
    """(pipelined, message by message) jobs/s publishing ``items`` jobs to a queue no worker serves."""
    if items % 500:
        raise SystemExit("--publish must be a multiple of 500")
    from celery import group

    from mediaconduit_worker.batch import Batch
    from mediaconduit_worker.batch.api import _mark_sent
    from mediaconduit_worker.celery_app import app

    queue = "image-to-3d"
    rates = []
    for pipelined in (True, False):
        batch = Batch.of(url, "echo", {"capability": queue, "run": pipelined})
        for i in range(items):
            batch.add(f"publish {i}")
        jobs = list(batch.jobs.values())
        t = time.perf_counter()
        if pipelined:
            batch.submit(resume=False)
        else:  # the loop Batch.submit ran before: marks pipelined, each message its own round trips
            for i in range(0, items, 500):
                part = jobs[i:i + 500]
                _mark_sent(app, [j.ids[0] for j in part])
                group(j.signature() for j in part).apply_async()
        rates.append(items / (time.perf_counter() - t))
        with app.connection_for_write() as conn:
            client = conn.default_channel.client
            assert client.llen(queue) == items, client.llen(queue)
            client.delete(queue)
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000, help="jobs through the I/O pool")
    parser.add_argument("--prefork-jobs", type=int, default=200, help="jobs through prefork -c 2 (at ~4/s)")
    parser.add_argument("--rss-jobs", type=int, default=10_000)
    parser.add_argument("--rtt", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--publish", type=int, default=10_000)
    args = parser.parse_args()

    import os

    apis = StandInAPIs(latency=args.latency).start()
    os.environ.update(apis.env())
    url = git_url(REPO / "providers" / "openrouter-provider")
    echo_url = git_url(REPO / "providers" / "echo-provider")
    from mediaconduit_worker import transform
    from mediaconduit_worker.worker.pools import plan_pools

    print(f"OpenRouter provider, stand-in API answering in {args.latency * 1000:.0f} ms, embedded Redis, "
          f"{os.cpu_count()} cores:")
    prefork = start_celery("mediaconduit_worker.celery_app", "text-to-text", 2, ["-P", "prefork"])
    try:
        run_batch(url, 4, "warm-prefork")
        prefork_rate = run_batch(url, args.prefork_jobs, "prefork")
        prefork_rss = rss_mb(prefork.pid)
    finally:
        stop_process(prefork)
    (plan,) = plan_pools(["text-to-text"], None, None, None)  # the default I/O pool, as `mediaconduit worker` runs it
    share = plan.per_process()[0].concurrency
    raw = [start_celery("raw_app", RAW_QUEUE, share, ["-P", "threads"], name=f"raw-{i}") for i in range(plan.processes)]
    try:
        raw_rate(apis, 200)
        yardstick = raw_rate(apis, args.jobs)
    finally:
        for proc in raw:
            stop_process(proc)
    io = start_io_pool("text-to-text")
    mem: dict[str, float] = {}
    first = min(1000, args.jobs)  # jobs before the first memory figure
    try:
        run_batch(url, 200, "warm-io")  # provider loaded, every thread and connection made once

        def at_first(progress) -> None:
            if progress.finished >= first and "first" not in mem:
                mem["first"] = rss_mb(io.pid)

        io_rate = run_batch(url, args.jobs, "io", at_first)
        if args.rss_jobs > args.jobs:
            run_batch(url, args.rss_jobs - args.jobs, "more")
        mem["last"] = rss_mb(io.pid)
        echo_p50, _ = round_trips(lambda: transform.delay("hello", echo_url, "echo"), args.rtt)
        hit_p50, hits = round_trips(lambda: transform.delay("hello", url, MODEL, {"cache": True}), args.rtt)
        hit_worker = statistics.median(r["metadata"]["processing_time_ms"] for r in hits)
        assert all(r["metadata"]["cache"]["hit"] for r in hits)
    finally:
        stop_process(io)
    pipelined, one_by_one = publish_rates(echo_url, args.publish)
    apis.stop()

    ideal = {"prefork": 2 / args.latency, "io": plan.concurrency / args.latency}
    print(f"\nthroughput ({args.prefork_jobs} jobs on prefork, {args.jobs} on the I/O pool):")
    row("prefork -c 2", prefork_rate, "jobs/s", f"(ideal {ideal['prefork']:.0f})")
    pools = f"{plan.processes} x threads -c {share}"
    row(f"default I/O pool ({pools})", io_rate, "jobs/s",
        f"(ideal {ideal['io']:.0f}; {io_rate / prefork_rate:.0f}x prefork, target >= 30x)")
    row(f"raw Celery task, same POST, {pools}", yardstick, "jobs/s",
        f"(ideal {ideal['io']:.0f}; yardstick: Celery's own cost per job)")
    print("\nmemory (RSS, main process + pool children):")
    row("prefork -c 2 after its jobs", prefork_rss, "MB")
    row(f"I/O pool after {first:,} jobs", mem["first"], "MB")
    row(f"I/O pool after {max(args.rss_jobs, args.jobs):,} jobs", mem["last"], "MB",
        f"({(mem['last'] / mem['first'] - 1) * 100:+.1f} % from {first:,}; target <= +10 %)")
    print(f"\nround trips ({args.rtt} sequential, p50):")
    row("uncached echo transform (yardstick)", echo_p50, "ms")
    row("cache hit (OpenRouter, options.cache)", hit_p50, "ms", f"(API call would take {args.latency * 1000:.0f} ms)")
    row("  of which at the worker (processing_time_ms)", hit_worker, "ms", "(target <= 10)")
    print(f"\npublishing a {args.publish:,}-job batch:")
    row("pipelined, one round trip per 500-job chunk", pipelined, "jobs/s",
        f"({pipelined / one_by_one:.1f}x; the I/O pool's ideal intake is {ideal['io']:.0f} jobs/s)")
    row("message by message (yardstick)", one_by_one, "jobs/s")


if __name__ == "__main__":
    main()
