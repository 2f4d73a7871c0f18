"""CPU instructions per job, counted by valgrind's callgrind: the echo transform vs a raw Celery task.

Timings on a shared machine drift by tens of percent between runs; instruction counts repeat to a few
parts in a thousand, so this is the yardstick for what a change to the job path costs. Two views:

* the pool process alone: each task traced as a prefork child runs it (STARTED and SUCCESS stored in a
  real Redis), in one process, so the figure has no noise from elsewhere;
* a whole worker (``prefork -c 1`` under callgrind): its main process (message, events, acks) and its
  pool process, ``--jobs`` sequential round trips sent by a producer, also under callgrind (sending a
  job, waiting for its result and decoding it), so the round trip counts every Python process it crosses.

Each figure is (a run of N jobs minus a run of none) / N, so start-up and provider loading cancel out. A
worker's main process also spends instructions while it waits (its event loop's timers, the transport's
reclaim sweep), in proportion to the time it runs, not to the jobs: the run of none is held idle for as
long as the run of N took to send its jobs, so a loaded machine's slower run is not counted as the jobs'
cost.

    python bench/bench_instructions.py [--jobs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ECHO_QUEUE,
    RAW_QUEUE,
    callgrind,
    callgrind_total,
    git_mirror,
    isolated_environment,
    row,
    senders,
    start_celery,
    stop_process,
)

WARM_UP = 30
KINDS = ("raw", "echo")
WORKER_APPS = {"raw": ("raw_app", RAW_QUEUE), "echo": ("mediaconduit_worker.celery_app", ECHO_QUEUE)}
#: Generous: a worker under valgrind takes minutes to start and to stop.
VALGRIND_TIMEOUT = 900


def traced(kind: str, jobs: int, url: str) -> None:
    """Runs under valgrind: ``jobs`` traced calls of ``kind`` after a warm-up."""
    isolated_environment()
    import raw_app
    from celery.app.trace import build_tracer

    from mediaconduit_worker import transform
    from mediaconduit_worker.worker.redaction import show_results_briefly

    show_results_briefly()  # as the worker does at start
    task, args = {"raw": (raw_app.raw, ["hello"]), "echo": (transform, ["hello", url, "echo", None])}[kind]
    trace = build_tracer(task.name, task, app=task.app, hostname="bench@host")

    def call() -> Any:
        tid = str(uuid.uuid4())
        request = {"id": tid, "task": task.name, "args": args, "kwargs": {}, "hostname": "bench@host", "retries": 0,
                   "delivery_info": {"routing_key": "bench", "exchange": ""}, "is_eager": False}
        return trace(tid, args, {}, request)

    for _ in range(WARM_UP + jobs):
        call()


def this_script(mode: str, kind: str, jobs: int, url: str, idle: float = 0.0) -> list[str]:
    return [sys.executable, __file__, f"--{mode}", kind, "--jobs", str(jobs), "--url", url, "--idle", str(idle)]


def worker(kind: str, jobs: int, url: str, idle: float) -> None:
    """Starts a ``prefork -c 1`` worker under valgrind, sends it ``jobs`` round trips after a warm-up (then
    waits ``idle`` seconds), stops it and prints the instructions of its main and its pool process, and the
    seconds the jobs took (JSON)."""
    out = Path(tempfile.mkdtemp(prefix="mc-callgrind-"))
    app, queue = WORKER_APPS[kind]
    proc = start_celery(app, queue, 1, ["--without-heartbeat", "--without-mingle", "--without-gossip"],
                        name=f"{kind}-{jobs}", timeout=VALGRIND_TIMEOUT,
                        prefix=callgrind(out / "cg.%p"))
    try:
        began = time.monotonic()
        sent = subprocess.run([*callgrind(out / "producer"), *this_script("producer", kind, jobs, url, idle)],
                              capture_output=True, text=True)
        took = time.monotonic() - began
    finally:
        stop_process(proc, VALGRIND_TIMEOUT)
    if sent.returncode != 0:
        raise RuntimeError(f"producer {kind} {jobs} failed:\n{sent.stderr[-3000:]}")
    counts = {int(f.name.split(".")[1]): callgrind_total(f) for f in out.glob("cg.*")}
    main_process = counts.pop(proc.pid)
    print(json.dumps({"main": main_process, "pool": sum(counts.values()), "producer": callgrind_total(out / "producer"),
                      "seconds": took}))


def producer(kind: str, jobs: int, url: str, idle: float) -> None:
    """Runs under valgrind: ``jobs`` sequential round trips of ``kind`` after a warm-up, then ``idle`` seconds
    of waiting (the producer sleeps; its worker's main process keeps its timers)."""
    send = senders(url)[kind]
    for _ in range(WARM_UP + jobs):
        send().get(timeout=300)
    time.sleep(idle)


def run(mode: str, kind: str, jobs: int, url: str, env: dict[str, str] | None = None,
        idle: float = 0.0) -> dict[str, float]:
    """One measurement in a new process: ``traced`` under valgrind, or ``worker`` driving one (``env``: settings
    for it, its worker and its producer, such as ``MEDIACONDUIT_BROKER_TRANSPORT``; ``idle``: seconds its
    producer waits after its jobs)."""
    counted = Path(tempfile.mkdtemp(prefix="mc-callgrind-")) / "traced"
    cmd = this_script(mode, kind, jobs, url, idle)
    out = subprocess.run([*callgrind(counted), *cmd] if mode == "traced" else cmd, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if mode == "traced" and out.returncode == 0:
        return {"pool": callgrind_total(counted)}
    if mode == "worker" and out.returncode == 0:
        return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]
    raise RuntimeError(f"{mode} {kind} {jobs} failed:\n{out.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--traced", choices=KINDS)
    parser.add_argument("--worker", choices=KINDS)
    parser.add_argument("--producer", choices=KINDS)
    parser.add_argument("--url")
    parser.add_argument("--idle", type=float, default=0.0)
    args = parser.parse_args()
    if args.traced:
        return traced(args.traced, args.jobs, args.url)
    if args.worker:
        return worker(args.worker, args.jobs, args.url, args.idle)
    if args.producer:
        return producer(args.producer, args.jobs, args.url, args.idle)
    if not shutil.which("valgrind"):
        sys.exit("bench_instructions needs valgrind (Debian: apt-get install valgrind)")
    isolated_environment()  # the Redis that the worker runs use
    url = git_mirror("echo-provider")
    print(f"instructions per job, callgrind, {args.jobs} jobs (about 10 minutes):")
    runs = [(mode, kind, n) for mode, n in (("traced", 0), ("traced", args.jobs), ("worker", args.jobs))
            for kind in KINDS]
    with ThreadPoolExecutor(2) as pool:  # raw and echo side by side (separate queues and worker names)
        counts = dict(zip(runs, pool.map(lambda r: run(*r, url), runs)))
        # the runs of none last as long as the runs of N took: the same waiting in both
        idle = [("worker", kind, 0) for kind in KINDS]
        counts.update(zip(idle, pool.map(lambda r: run(*r, url, idle=counts["worker", r[1], args.jobs]["seconds"]),
                                         idle)))

    def per_job(mode: str, kind: str, part: str) -> float:
        return (counts[mode, kind, args.jobs][part] - counts[mode, kind, 0][part]) / args.jobs / 1000

    figures = {
        "pool process, traced in one process": {k: per_job("traced", k, "pool") for k in KINDS},
        "worker main process (prefork -c 1)": {k: per_job("worker", k, "main") for k in KINDS},
        "worker pool process (prefork -c 1)": {k: per_job("worker", k, "pool") for k in KINDS},
    }
    figures["whole worker (main + pool process)"] = {
        k: figures["worker main process (prefork -c 1)"][k] + figures["worker pool process (prefork -c 1)"][k] for k in KINDS}
    figures["producer (send, wait, decode the result)"] = {k: per_job("worker", k, "producer") for k in KINDS}
    figures["round trip (producer + whole worker)"] = {
        k: figures["whole worker (main + pool process)"][k] + figures["producer (send, wait, decode the result)"][k]
        for k in KINDS}
    for label, by_kind in figures.items():
        raw, echo = by_kind["raw"], by_kind["echo"]
        print(f"  {label}:")
        row("raw Celery task", raw, "k instr")
        row("echo transform", echo, "k instr", f"({echo - raw:+.0f}k; raw/echo {raw / echo:.2f}x)")


if __name__ == "__main__":
    main()
