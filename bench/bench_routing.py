"""Routing benchmark, every figure beside its yardstick measured in the same run:

- failover overhead: from the moment a failing candidate's API has answered 503 to the moment the next
  candidate's API receives the job's request (both stand-ins in this process, one clock);
- per-job overhead of a ``route:`` job over a direct job to the same provider and model (round-trip p50s);
- throughput of a route whose candidate has ``max_concurrency: 4``, served by a 16-thread worker,
  against direct jobs to the same API on a worker of 4 (Celery's own way to bound a provider's calls).

The APIs are the stand-ins of tests/support/standin_apis.py (OpenRouter and Together wire formats),
the providers are the repository's own, loaded from their folders.

    python bench/bench_routing.py [--jobs 300] [--rounds 3] [--burst 300] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, isolated_environment, percentile, row, start_celery, stop_process, throughput

HOME = isolated_environment()
sys.path.insert(0, str(REPO / "tests" / "support"))
from standin_apis import Reply, StandInAPIs  # noqa: E402

FAILING = str(REPO / "providers" / "openrouter-provider")
SERVING = str(REPO / "providers" / "together-provider")
FAIL_MODEL, MODEL = "openai/gpt-4o-mini", "meta-llama/Llama-3.3-70B-Instruct-Turbo"
FAIL_PATH, CHAT_PATH = "/openrouter/api/v1/chat/completions", "/together/v1/chat/completions"
THREADS = ["-P", "threads"]


def write_routes(path: Path) -> None:
    failover = {"allowed_fails": 1_000_000, "candidates": [{"provider": FAILING, "model": FAIL_MODEL},
                                                           {"provider": SERVING, "model": MODEL}]}
    routes = {"failover": failover,
              "solo": {"candidates": [{"provider": SERVING, "model": MODEL}]},
              "limited": {"candidates": [{"provider": SERVING, "model": MODEL, "max_concurrency": 4}]}}
    path.write_text(yaml.safe_dump({"routes": routes}))


def round_trip_p50(send, count: int) -> float:
    for _ in range(20):
        send().get(timeout=60)  # warm up: providers loaded, connections open, scripts loaded
    times = []
    for _ in range(count):
        t = time.perf_counter()
        send().get(timeout=60)
        times.append((time.perf_counter() - t) * 1000)
    return percentile(times, 50)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300, help="sequential jobs per round-trip round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=300, help="jobs per throughput round")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the API takes per call in the throughput rounds")
    args = parser.parse_args()

    failing, serving = StandInAPIs().start(), StandInAPIs().start()
    os.environ.update({k: v for k, v in failing.env().items() if k.startswith("OPENROUTER")})
    os.environ.update({k: v for k, v in serving.env().items() if k.startswith("TOGETHER")})
    routes = HOME / "routes.yml"
    write_routes(routes)
    os.environ["MEDIACONDUIT_ROUTES"] = str(routes)
    failing.always("POST", FAIL_PATH, Reply(503, {"error": {"message": "overloaded"}}))

    from mediaconduit_worker import transform

    def sender(provider: str, model: str | None, queue: str):
        return lambda: transform.apply_async(("hello", provider, model, {}), queue=queue)

    workers = [start_celery("mediaconduit_worker.celery_app", "bench-route", 16, THREADS),
               start_celery("mediaconduit_worker.celery_app", "bench-direct", 4, THREADS)]
    try:
        print(f"failover (503 from the first candidate, served by the second), {args.jobs} sequential jobs:")
        round_trip_p50(sender("route:failover", None, "bench-route"), args.jobs)
        gaps = []
        for fail, ok in zip(failing.calls(FAIL_PATH)[20:], serving.calls(CHAT_PATH)[20:]):
            assert fail.done is not None
            gaps.append((ok.at - fail.done) * 1000)
        row("failover overhead p50 (503 answered -> next request)", percentile(gaps, 50), "ms", "(target <= 20)")
        row("failover overhead p99", percentile(gaps, 99), "ms")

        print(f"\nround trips, route:solo vs the same provider and model directly, median of {args.rounds} alternating rounds:")
        senders = {"direct": sender(SERVING, MODEL, "bench-route"), "route": sender("route:solo", None, "bench-route")}
        p50s: dict[str, list[float]] = {"direct": [], "route": []}
        for _ in range(args.rounds):
            for name, send in senders.items():
                p50s[name].append(round_trip_p50(send, args.jobs))
        direct, routed = (statistics.median(p50s[n]) for n in ("direct", "route"))
        row("direct job round trip p50", direct, "ms")
        row("route: job round trip p50", routed, "ms", f"(+{routed - direct:.2f} ms per job; target <= 2)")

        print(f"\nthroughput, {args.burst} jobs at once, the API taking {args.delay * 1000:.0f} ms per call, "
              f"median of {args.rounds} alternating rounds:")
        serving.slow(CHAT_PATH, args.delay)
        rates: dict[str, list[float]] = {"direct": [], "route": []}
        peaks: dict[str, int] = {"direct": 0, "route": 0}
        senders = {"direct": sender(SERVING, MODEL, "bench-direct"), "route": sender("route:limited", None, "bench-route")}
        for _ in range(args.rounds):
            for name, send in senders.items():
                serving.max_active[CHAT_PATH] = 0
                rates[name].append(throughput(send, args.burst))
                peaks[name] = max(peaks[name], serving.max_active[CHAT_PATH])
        ideal = 4 / args.delay
        direct_tp, route_tp = (statistics.median(rates[n]) for n in ("direct", "route"))
        row("direct, a 4-thread worker", direct_tp, "jobs/s", f"(ideal {ideal:.0f}; peak {peaks['direct']} calls at once)")
        row("route max_concurrency 4, a 16-thread worker", route_tp, "jobs/s",
            f"({route_tp / direct_tp:.2f}x direct; peak {peaks['route']} calls at once)")
    finally:
        for w in workers:
            stop_process(w)
        failing.stop()
        serving.stop()


if __name__ == "__main__":
    main()
