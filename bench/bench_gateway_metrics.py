"""What recording metrics costs a gateway request: ``GET /v1/jobs`` (a tenant's key checked, its jobs listed
from Redis) on a gateway with ``--metrics-port`` against the same on a gateway without, on one Redis, in
one run; and the metrics middleware's own time, called directly around an app that answers at once,
beside that app alone.

    python bench/bench_gateway_metrics.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, isolated_environment, percentile, row, start_gateway, stop_process

HOME = isolated_environment()


def requests_timed(client: Any, count: int) -> tuple[float, float, float]:
    """p50 and p99 (ms) of ``count`` sequential ``GET /v1/jobs``, and requests per second, after a warm-up."""
    for _ in range(50):
        client.get("/v1/jobs").raise_for_status()
    times = []
    start = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        client.get("/v1/jobs").raise_for_status()
        times.append((time.perf_counter() - t) * 1000)
    return percentile(times, 50), percentile(times, 99), count / (time.perf_counter() - start)


def middleware_cost(number: int = 20000) -> tuple[float, float]:
    """Microseconds per request of an ASGI app that answers at once, with the metrics middleware around it
    and alone, in this process, recording into a directory of its own."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mc-gateway-metrics-bench-")
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    from types import SimpleNamespace

    from mediaconduit_worker.gateway.auth import TENANT_KEY
    from mediaconduit_worker.gateway.metrics import Measured

    route = SimpleNamespace(path="/v1/jobs/{job_id}")

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = route
        scope["state"][TENANT_KEY] = "bench"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    async def run(app: Any) -> float:
        start = time.perf_counter()
        for _ in range(number):
            await app({"type": "http", "method": "GET", "path": "/v1/jobs/x", "state": {}}, receive, send)
        return (time.perf_counter() - start) / number * 1e6

    measured = Measured(answer)
    on = min(asyncio.run(run(measured)) for _ in range(3))
    off = min(asyncio.run(run(answer)) for _ in range(3))
    return on, off


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import httpx

    made = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "keys", "create", "--tenant", "bench",
                           "--json"], capture_output=True, text=True, check=True)
    key = json.loads(made.stdout)["key"]
    ports = {"off": free_port(), "on": free_port()}
    metrics_port = free_port()
    gateways = [start_gateway(ports["off"], None), start_gateway(ports["on"], metrics_port)]
    clients = {kind: httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"})
               for kind, port in ports.items()}
    results: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
    try:
        for i in range(args.rounds):  # paired rounds in alternating order: drift hits both alike
            for kind in sorted(clients, reverse=bool(i % 2)):
                results[kind].append(requests_timed(clients[kind], args.requests))
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
                      if line.startswith("mediaconduit_gateway_requests_total{") and 'tenant="bench"' in line)
    finally:
        for client in clients.values():
            client.close()
        for proc in gateways:
            stop_process(proc)
    sent = args.rounds * (args.requests + 50)
    off, on = results["off"], results["on"]
    print(f"GET /v1/jobs with a tenant's key, one uvicorn process, metrics off vs on, median of {args.rounds} "
          f"paired rounds of {args.requests} sequential requests:")
    ratio = statistics.median(b[2] / a[2] for a, b in zip(off, on))
    extra = statistics.median(b[0] - a[0] for a, b in zip(off, on))
    row("requests/s, metrics off (yardstick)", statistics.median(r[2] for r in off), "req/s")
    row("requests/s, metrics on", statistics.median(r[2] for r in on), "req/s", f"({ratio:.3f}x off; target >= 0.98x)")
    row("latency p50, metrics off (yardstick)", statistics.median(r[0] for r in off), "ms")
    row("latency p50, metrics on", statistics.median(r[0] for r in on), "ms", f"({extra:+.3f} ms)")
    row("latency p99, metrics off", statistics.median(r[1] for r in off), "ms")
    row("latency p99, metrics on", statistics.median(r[1] for r in on), "ms")
    row("requests the endpoint counted / requests sent", counted / sent, "", f"({counted:.0f} of {sent})")
    with_metrics, alone = middleware_cost()
    print("\nthe metrics middleware, called directly around an app that answers at once:")
    row("app with the middleware", with_metrics, "us/req")
    row("the app alone (yardstick)", alone, "us/req", f"(metrics add {with_metrics - alone:.1f} us/request)")


if __name__ == "__main__":
    main()
