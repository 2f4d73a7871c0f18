"""Broker transport benchmark: kombu's own Redis transport (the yardstick) against MediaConduit's, in one run.

* round trip p50/p99 and throughput of a raw Celery task, one ``prefork -c 2`` worker per transport,
  in alternating rounds (bench_spine's method);
* Redis commands per job (``INFO commandstats`` over a burst of jobs to each worker alone: the producer's
  and the result backend's commands are the same for both, the difference is the transport's);
* CPU instructions per job of the raw task's round trip under callgrind, per transport (bench_instructions'
  worker mode: the worker's main process, where receive and ack run, its pool process and the producer);
* recovery after a whole-worker SIGKILL with two jobs running: the time until they run again on a second
  worker. kombu's transport waits for the visibility timeout (an hour by default; 30 s here).

The producer (this process) publishes the same way with either transport (kombu's ``LPUSH``).

    python bench/bench_transport.py [--rtt 300] [--inflight 1000] [--rounds 3] [--jobs 100] [--no-instructions]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import isolated_environment, round_trips, row, start_celery, stop_process, throughput

HOME = isolated_environment()
TRANSPORTS = {"kombu": {"MEDIACONDUIT_BROKER_TRANSPORT": "kombu"}, "mediaconduit": {}}
SLEEP = 20.0
"""Seconds each job of the recovery runs: longer than a second worker takes to start."""


def sender(queue: str) -> Any:
    from celery import signature

    return signature("bench.raw", args=("hello",), queue=queue).apply_async


def commandstats(client: Any) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def commands_per_job(client: Any, send: Any, count: int) -> dict[str, float]:
    before = commandstats(client)
    throughput(send, count)
    after = commandstats(client)
    return {c: (n - before.get(c, 0)) / count for c, n in after.items() if n - before.get(c, 0) > 0}


def tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(p for child in out.split() for p in tree(int(child)))]


def recovery(transport: str, env: dict[str, str]) -> float:
    """Seconds from a whole-worker SIGKILL, two ``SLEEP`` s jobs running, until both started again elsewhere
    (until both are done, less their ``SLEEP`` s: they run again from the start)."""
    from celery import signature

    queue = f"recover-{transport}"
    first = start_celery("raw_app", queue, 2, name=f"recover-a-{transport}", env=env)
    jobs = [signature("bench.sleep", args=(SLEEP,), queue=queue).apply_async() for _ in range(2)]
    deadline = time.monotonic() + 60
    while any(j.state != "STARTED" for j in jobs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{transport}: the jobs did not start")
        time.sleep(0.05)
    second = start_celery("raw_app", queue, 2, name=f"recover-b-{transport}", env=env)
    if any(j.ready() for j in jobs):
        raise RuntimeError(f"{transport}: the jobs ended before the second worker was up; raise SLEEP")
    pids = tree(first.pid)
    for sig in (signal.SIGSTOP, signal.SIGKILL):  # the whole tree at once, as a container dies
        for pid in pids:
            os.kill(pid, sig)
    first.wait()
    killed = time.monotonic()
    try:
        for j in jobs:
            j.get(timeout=600)
        return time.monotonic() - killed - SLEEP
    finally:
        stop_process(second)


def instructions(jobs: int) -> dict[str, dict[str, float]]:
    """Per job, by part, for each transport (bench_instructions' worker mode, one run after another)."""
    import bench_instructions

    counts = {}
    for t, env in TRANSPORTS.items():  # the run of none held idle as long as the run of N took (bench_instructions)
        counts[t, jobs] = bench_instructions.run("worker", "raw", jobs, "", env)
        counts[t, 0] = bench_instructions.run("worker", "raw", 0, "", env, idle=counts[t, jobs]["seconds"])
    out: dict[str, dict[str, float]] = {}
    for t in TRANSPORTS:
        parts = {p: (counts[t, jobs][p] - counts[t, 0][p]) / jobs / 1000 for p in ("main", "pool", "producer")}
        parts["round trip"] = sum(parts.values())
        out[t] = parts
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rtt", type=int, default=300)
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=100, help="callgrind round trips per transport")
    parser.add_argument("--no-instructions", action="store_true")
    args = parser.parse_args()
    from mediaconduit_worker.celery_app import app

    client = app.backend.client
    queues = {t: f"raw-{t}" for t in TRANSPORTS}
    workers = [start_celery("raw_app", queues[t], 2, name=f"raw-{t}", env=env) for t, env in TRANSPORTS.items()]
    send = {t: sender(q) for t, q in queues.items()}
    rtts: dict[str, list[tuple[float, float]]] = {t: [] for t in TRANSPORTS}
    rates: dict[str, list[float]] = {t: [] for t in TRANSPORTS}
    try:
        for i in range(args.rounds):
            for t in sorted(TRANSPORTS, reverse=bool(i % 2)):
                rtts[t].append(round_trips(send[t], args.rtt))
        for i in range(args.rounds):
            for t in sorted(TRANSPORTS, reverse=bool(i % 2)):
                rates[t].append(throughput(send[t], args.inflight))
        commands = {t: commands_per_job(client, send[t], args.inflight) for t in TRANSPORTS}
    finally:
        for w in workers:
            stop_process(w)

    print(f"raw Celery task, prefork -c 2, kombu's transport vs MediaConduit's, median of {args.rounds} alternating rounds:")
    for t in TRANSPORTS:
        p50, p99 = (statistics.median(c) for c in zip(*rtts[t]))
        row(f"{t}: round trip p50 / p99", p50, "ms", f"p99 {p99:.2f} ms")
        row(f"{t}: throughput ({args.inflight} in flight)", statistics.median(rates[t]), "jobs/s")
    extra = statistics.median(m[0] - k[0] for k, m in zip(rtts["kombu"], rtts["mediaconduit"]))
    base = statistics.median(k[0] for k in rtts["kombu"])
    ratio = statistics.median(m / k for k, m in zip(rates["kombu"], rates["mediaconduit"]))
    row("MediaConduit's transport: round trip p50", extra, "ms", f"({extra / base:+.1%} of raw Celery's; target <= +2%)")
    row("MediaConduit's transport: throughput", ratio, "x", "(of kombu's transport, median of paired rounds)")

    print(f"\nRedis commands per job (INFO commandstats, {args.inflight} jobs, producer and results included):")
    for t in TRANSPORTS:
        total = sum(commands[t].values())
        shown = ", ".join(f"{c} {n:.2f}" for c, n in sorted(commands[t].items(), key=lambda kv: -kv[1]) if n >= 0.05)
        row(f"{t}", total, "cmds", shown)

    print(f"\nrecovery after a whole-worker SIGKILL, two {SLEEP:.0f} s jobs running, a second worker idle:")
    kombu_env = {**TRANSPORTS["kombu"], "MEDIACONDUIT_VISIBILITY_TIMEOUT": "30"}
    row("kombu (visibility timeout 30 s; 3600 by default)", recovery("kombu", kombu_env), "s", "until both run again")
    row("mediaconduit (default settings: 15 s lease)", recovery("mediaconduit", {}), "s", "until both run again")

    if args.no_instructions:
        return
    print(f"\ninstructions per job, raw Celery task, callgrind, {args.jobs} round trips per transport:")
    counted = instructions(args.jobs)
    for part in ("main", "pool", "producer", "round trip"):
        k, m = counted["kombu"][part], counted["mediaconduit"][part]
        row(f"{part}: kombu / mediaconduit", k, "k instr", f"{m:.0f}k ({m - k:+.0f}k, {(m - k) / counted['kombu']['round trip']:+.1%} "
            "of the round trip)")


if __name__ == "__main__":
    main()
