"""What recording metrics costs a job: echo transforms on a worker with metrics on (``--metrics-port``, the
multiprocess files) against the same on a worker with them off, on one Redis, in one run; and the metrics
step's own time, called directly, beside the same job steps without it.

    python bench/bench_metrics.py [--inflight 2000] [--rtt 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_mirror, isolated_environment, round_trips, row, start_celery, stop_process, throughput

HOME = isolated_environment()
QUEUES = {"off": "metrics-off-bench", "on": "metrics-on-bench"}


def step_cost(number: int = 20000) -> tuple[float, float]:
    """Microseconds per job of the metrics step and call observer (a served, priced call with usage), and
    of the same step-chain call without them, in this process, recording into a directory of its own."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mc-metrics-bench-")
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    from mediaconduit_worker.worker.metrics.step import measure, observe_call
    from mediaconduit_worker.worker.pipeline import Run, run_steps

    loaded = SimpleNamespace(manifest=SimpleNamespace(id="echo-provider"))
    runnable = SimpleNamespace(id="echo")
    output = SimpleNamespace(metadata={"cost": {"usd": 0.001, "currency": "USD"},
                                       "usage": {"prompt_tokens": 5, "completion_tokens": 7}})
    served = SimpleNamespace(loaded=loaded, model="echo", route=None, output=output)
    request = SimpleNamespace(delivery_info={"routing_key": "text-to-text"}, hostname="bench@host", eta=None,
                              mediaconduit_sent=time.time(), id="t")

    def serve(run, proceed) -> None:
        observe_call(loaded, runnable, None, 0.001, None)  # type: ignore[arg-type]
        run.served = served
        run.result = {}

    def bare(run, proceed) -> None:
        run.served = served
        run.result = {}

    def job(steps) -> None:
        run_steps(steps, Run(None, request, ("hello", "url", "echo", None)))

    on = min(timeit.repeat(lambda: job((measure, serve)), number=number, repeat=3)) / number * 1e6
    off = min(timeit.repeat(lambda: job((bare,)), number=number, repeat=3)) / number * 1e6
    return on, off


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inflight", type=int, default=2000)
    parser.add_argument("--rtt", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    url = git_mirror("echo-provider")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workers = [start_celery("mediaconduit_worker.celery_app", QUEUES["off"]),
               start_celery("mediaconduit_worker.celery_app", QUEUES["on"], env={"MEDIACONDUIT_METRICS_PORT": str(port)})]
    from mediaconduit_worker import transform

    send = {kind: (lambda q=q: transform.apply_async(("hello", url, "echo"), queue=q)) for kind, q in QUEUES.items()}
    rtts: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    rates: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for i in range(args.rounds):  # paired rounds in alternating order: drift hits both alike
            for kind in sorted(send, reverse=bool(i % 2)):
                rtts[kind].append(round_trips(send[kind], args.rtt))
        for i in range(args.rounds):
            for kind in sorted(send, reverse=bool(i % 2)):
                rates[kind].append(throughput(send[kind], args.inflight))
        import httpx

        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
                      if line.startswith("mediaconduit_jobs_total{") and 'outcome="succeeded"' in line)
    finally:
        for w in workers:
            stop_process(w)
    sent = args.rounds * (args.rtt + 20 + args.inflight)
    print(f"echo transforms, prefork -c 2, metrics off vs on, median of {args.rounds} paired rounds "
          f"({args.rtt} sequential round trips, {args.inflight} in flight):")
    ratio = statistics.median(on / off for off, on in zip(rates["off"], rates["on"]))
    extra = statistics.median(on[0] - off[0] for off, on in zip(rtts["off"], rtts["on"]))
    row("throughput, metrics off (yardstick)", statistics.median(rates["off"]), "jobs/s")
    row("throughput, metrics on", statistics.median(rates["on"]), "jobs/s",
        f"({ratio:.3f}x off; target >= 0.98x)")
    row("round trip p50, metrics off (yardstick)", statistics.median(r[0] for r in rtts["off"]), "ms")
    row("round trip p50, metrics on", statistics.median(r[0] for r in rtts["on"]), "ms", f"({extra:+.3f} ms)")
    row("round trip p99, metrics off", statistics.median(r[1] for r in rtts["off"]), "ms")
    row("round trip p99, metrics on", statistics.median(r[1] for r in rtts["on"]), "ms")
    row("jobs the endpoint counted / jobs sent", counted / sent, "", f"({counted:.0f} of {sent})")
    on, off = step_cost()
    print("\nthe metrics step and call observer, called directly (one served, priced call with usage):")
    row("steps with metrics", on, "us/job")
    row("the same steps without (yardstick)", off, "us/job", f"(metrics add {on - off:.1f} us/job)")


if __name__ == "__main__":
    main()
