"""Spine benchmark: echo transforms vs a raw Celery task on the same Redis and worker settings,
and provider resolution (in-process warm, fresh process from disk cache, cold from a git mirror).

    python bench/bench_spine.py [--inflight 2000] [--rtt 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ECHO_QUEUE,
    RAW_QUEUE,
    git_mirror,
    isolated_environment,
    round_trips,
    row,
    senders,
    start_celery,
    stop_process,
    throughput,
)

HOME = isolated_environment()


def resolution(url: str) -> dict[str, float]:
    code = (
        "import json, sys, time\n"
        "t0 = time.perf_counter()\n"
        "from mediaconduit_worker.worker.loader import ProviderRegistry\n"
        "r = ProviderRegistry()\n"
        "t1 = time.perf_counter(); r.get(sys.argv[1]); t2 = time.perf_counter(); r.get(sys.argv[1]); t3 = time.perf_counter()\n"
        "print(json.dumps({'import': (t1-t0)*1e3, 'load': (t2-t1)*1e3, 'warm': (t3-t2)*1e6}))\n"
    )
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.splitlines()[-1])
    figures["process"] = (time.perf_counter() - t) * 1000
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inflight", type=int, default=2000)
    parser.add_argument("--rtt", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    url = git_mirror("echo-provider")

    print("provider resolution (echo-provider from a local git mirror):")
    cold = resolution(url)
    disk = resolution(url)
    row("cold: clone + export + import", cold["load"], "ms", "(target < 2000)")
    row("fresh process, from the disk cache", disk["load"], "ms", "(target < 50)")
    row("in-process warm", disk["warm"], "us")
    row("(fresh process wall time incl. interpreter)", disk["process"], "ms")

    print(f"\nround trips ({args.rtt} sequential) and throughput ({args.inflight} in flight), prefork -c 2,"
          f" median of {args.rounds} alternating rounds:")
    workers = [start_celery("raw_app", RAW_QUEUE), start_celery("mediaconduit_worker.celery_app", ECHO_QUEUE)]
    send_one = senders(url)
    rtts: dict[str, list[tuple[float, float]]] = {"raw": [], "echo": []}
    rates: dict[str, list[float]] = {"raw": [], "echo": []}
    try:
        # Rounds pair the two back to back, in alternating order, and take all round trips before any
        # burst, so drift and backlog hit both alike; the comparison is the median of the rounds' pairs.
        for i in range(args.rounds):
            for name, send in sorted(send_one.items(), reverse=bool(i % 2)):
                rtts[name].append(round_trips(send, args.rtt))
        for i in range(args.rounds):
            for name, send in sorted(send_one.items(), reverse=bool(i % 2)):
                rates[name].append(throughput(send, args.inflight))
    finally:
        for w in workers:
            stop_process(w)
    (raw_p50, raw_p99), (mc_p50, mc_p99) = ((statistics.median(c) for c in zip(*rtts[n])) for n in send_one)
    raw_tp, mc_tp = (statistics.median(rates[n]) for n in send_one)
    ratio = statistics.median(e / r for r, e in zip(rates["raw"], rates["echo"]))
    extra = statistics.median(e[0] - r[0] for r, e in zip(rtts["raw"], rtts["echo"]))
    row("raw Celery throughput", raw_tp, "jobs/s")
    row("echo transform throughput", mc_tp, "jobs/s", f"({ratio:.2f}x raw, median of paired rounds; target >= 0.95x)")
    row("raw Celery round trip p50", raw_p50, "ms")
    row("echo transform round trip p50", mc_p50, "ms", f"(+{extra:.2f} ms, median of paired rounds; target within 0.2 ms)")
    row("raw Celery round trip p99", raw_p99, "ms")
    row("echo transform round trip p99", mc_p99, "ms")


if __name__ == "__main__":
    main()
