"""What tracing costs: echo transforms with OpenTelemetry on (every job sampled, spans exported over
OTLP/HTTP to a local receiver that reads and drops them) against the same with tracing off, and raw
Celery beside them, in alternating rounds on one Redis.

    python bench/bench_tracing.py [--inflight 1000] [--rtt 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from common import RAW_QUEUE, git_mirror, isolated_environment, round_trips, row, start_celery, stop_process, throughput

HOME = isolated_environment()
TRACED_QUEUE, PLAIN_QUEUE = "traced-bench", "plain-bench"


SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
received = 0
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        global received
        received += len(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()
    def do_GET(self):  # how much arrived
        body = str(received).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_port, flush=True)
server.serve_forever()
"""
"""The OTLP receiver, in a process of its own: it reads each export and drops it."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--rtt", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    port = int(sink.stdout.readline())  # type: ignore[union-attr]
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_TRACES_SAMPLER": "always_on"}
    os.environ.update(otel)  # this process is the producer of the traced jobs

    from celery import signature

    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker import tracing

    url = git_mirror("echo-provider")
    workers = [start_celery("raw_app", RAW_QUEUE),
               start_celery("mediaconduit_worker.celery_app", PLAIN_QUEUE, env={"OTEL_SDK_DISABLED": "true"}),
               start_celery("mediaconduit_worker.celery_app", TRACED_QUEUE, env=otel)]
    traced_tracer = tracing.tracer()
    assert traced_tracer is not None, "the otel extra is not installed"

    def sender(queue: str, on: bool):  # the producer's own tracing follows the job's
        def send():
            tracing._tracer = traced_tracer if on else None
            try:
                return transform.apply_async(("hello", url, "echo"), queue=queue)
            finally:
                app.amqp.queues.pop(queue, None)
        return send

    raw = signature("bench.raw", args=("hello",), queue=RAW_QUEUE)
    sends = {"raw": raw.apply_async, "off": sender(PLAIN_QUEUE, False), "on": sender(TRACED_QUEUE, True)}
    try:
        rtts: dict[str, list[tuple[float, float]]] = {n: [] for n in sends}
        rates: dict[str, list[float]] = {n: [] for n in sends}
        for i in range(args.rounds):  # all round trips before any burst; the order alternates
            for name in sorted(sends, reverse=bool(i % 2)):
                rtts[name].append(round_trips(sends[name], args.rtt))
        for i in range(args.rounds):
            for name in sorted(sends, reverse=bool(i % 2)):
                rates[name].append(throughput(sends[name], args.inflight))
    finally:
        for w in workers:
            stop_process(w)
        tracing._tracer = traced_tracer
    from opentelemetry import trace

    trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]  (exports what is left)
    received = int(httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text)
    sink.kill()
    med = {n: statistics.median(r) for n, r in rates.items()}
    p50 = {n: statistics.median(p for p, _ in r) for n, r in rtts.items()}
    p99 = {n: statistics.median(q for _, q in r) for n, r in rtts.items()}
    ratio = statistics.median(on / off for off, on in zip(rates["off"], rates["on"], strict=True))
    print(f"echo transforms, prefork -c 2, median of {args.rounds} alternating rounds "
          f"({args.rtt} sequential round trips, {args.inflight} in flight):")
    row("raw Celery throughput", med["raw"], "jobs/s")
    row("echo, tracing off", med["off"], "jobs/s")
    row("echo, tracing on (100 % sampled)", med["on"], "jobs/s", f"({ratio:.3f}x off; aim >= 0.95x)")
    for name in ("raw", "off", "on"):
        row(f"round trip p50 / p99, {name}", p50[name], "ms", f"/ {p99[name]:.2f} ms")
    row("spans exported", received / 1024, "KiB", "(OTLP/HTTP protobuf, received; the workers' last batch may be out)")


if __name__ == "__main__":
    main()
