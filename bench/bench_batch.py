"""Batch benchmark: a 10,000-item echo batch through ``mediaconduit_worker.batch`` against the same
number of raw Celery tasks (same app settings, a task returning a small dict) in the same run, both
published as groups and watched the same way. Prints throughput, lost jobs (must be 0), the worker's
memory (RSS of main process + pool children) after 1k and after 10k items, and the cost of a resume.

    python bench/bench_batch.py [--items 10000] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RAW_QUEUE, REPO, isolated_environment, row, rss_mb, start_celery, stop_process

HOME = isolated_environment()


def raw_run(items: int) -> tuple[float, int]:
    """(jobs/s, lost) for ``items`` raw tasks published in groups of 500 and polled by MGET."""
    from celery import group, signature

    from mediaconduit_worker.batch.states import fetch_states
    from mediaconduit_worker.celery_app import app

    ids = [f"raw-{i}" for i in range(items)]
    t = time.perf_counter()
    for i in range(0, items, 500):
        group(signature("bench.raw", args=(f"item {j}",), queue=RAW_QUEUE, task_id=ids[j])
              for j in range(i, min(i + 500, items))).apply_async()
    pending = set(ids)
    while pending:
        states = fetch_states(app, list(pending))
        pending = {i for i, s in states.items() if not s.final}
        if pending:
            time.sleep(0.5)
    elapsed = time.perf_counter() - t
    lost = sum(s.state != "SUCCESS" for s in fetch_states(app, ids).values())
    return items / elapsed, lost


def batch_run(items: int, url: str, worker_pid: int) -> dict[str, float]:
    from mediaconduit_worker.batch import Batch

    batch = Batch.of(url, "echo")
    for i in range(items):
        batch.add(f"item {i}")
    mem: dict[str, float] = {"before": rss_mb(worker_pid)}

    def watch(progress) -> None:
        if progress.finished >= 1000 and "1k" not in mem:
            mem["1k"] = rss_mb(worker_pid)

    t = time.perf_counter()
    run = batch.submit()
    submitted = time.perf_counter() - t
    results = list(run.iter_results(timeout=1800, on_progress=watch))
    elapsed = time.perf_counter() - t
    mem["10k"] = rss_mb(worker_pid)
    ok = sum(r.status == "SUCCESS" for r in results)
    t = time.perf_counter()
    again = Batch.of(url, "echo")
    for i in range(items):
        again.add(f"item {i}")
    resent = again.submit().sent
    resume = time.perf_counter() - t
    return {"throughput": items / elapsed, "lost": items - ok, "distinct": len({r.id for r in results}),
            "submit_s": submitted, "resume_s": resume, "resent": resent, **{f"rss_{k}": v for k, v in mem.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    url = str(REPO / "providers" / "echo-provider")

    print(f"{args.items} items, prefork -c {args.concurrency}, embedded Redis on loopback:")
    raw_worker = start_celery("raw_app", RAW_QUEUE, args.concurrency)
    try:
        raw_warm, _ = raw_run(200)
        raw_tp, raw_lost = raw_run(args.items)
    finally:
        stop_process(raw_worker)
    mc_worker = start_celery("mediaconduit_worker.celery_app", "text-to-text", args.concurrency)
    try:
        from mediaconduit_worker import transform

        for _ in range(20):
            transform.delay("warm up", url, "echo").get(timeout=60)  # provider loaded in both children
        figures = batch_run(args.items, url, mc_worker.pid)
    finally:
        stop_process(mc_worker)
    tp = figures["throughput"]
    row("raw Celery group throughput", raw_tp, "jobs/s", f"(lost {raw_lost})")
    row("echo batch throughput", tp, "jobs/s", f"({tp / raw_tp:.2f}x raw)")
    row("echo batch lost jobs", figures["lost"], "", f"(distinct results {figures['distinct']:.0f})")
    row("publishing the batch (ids, routing, groups)", figures["submit_s"], "s")
    row("re-run of the finished batch: check + resend", figures["resume_s"], "s", f"(re-sent {figures['resent']:.0f})")
    row("worker RSS (main + children) after warm-up", figures["rss_before"], "MB")
    row("worker RSS after 1k items", figures.get("rss_1k", float("nan")), "MB")
    row("worker RSS after 10k items", figures["rss_10k"], "MB",
        f"({figures['rss_10k'] - figures.get('rss_1k', 0):+.1f} MB from 1k to 10k)")


if __name__ == "__main__":
    main()
