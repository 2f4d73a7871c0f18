"""CPU instructions a pool process spends per job: the echo transform vs a raw Celery task, each traced
as a prefork child runs it (STARTED and SUCCESS stored in a real Redis), counted by valgrind's callgrind.

Timings on a shared machine drift by tens of percent between runs; instruction counts repeat to a few
parts in a thousand, so this is the yardstick for what a change to the job path costs. Each figure is
(a run of N jobs minus a run of none) / N, so start-up and provider loading cancel out.

    python bench/bench_instructions.py [--jobs 200]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_mirror, row

WARM_UP = 30


def child(kind: str, jobs: int, url: str) -> None:
    """Runs under valgrind: ``jobs`` traced calls of ``kind`` after a warm-up."""
    from common import isolated_environment

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


def instructions(kind: str, jobs: int, url: str) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--child", kind, "--jobs", str(jobs), "--url", url],
        capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if not found:
        raise RuntimeError(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--child")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.jobs, args.url)
    if not shutil.which("valgrind"):
        sys.exit("bench_instructions needs valgrind (Debian: apt-get install valgrind)")
    url = git_mirror("echo-provider")
    runs = [(kind, n) for kind in ("raw", "echo") for n in (0, args.jobs)]
    print(f"instructions per job in a pool process, traced ({args.jobs} jobs, callgrind; ~2-4 minutes):")
    with ThreadPoolExecutor(2) as pool:
        counts = dict(zip(runs, pool.map(lambda run: instructions(*run, url), runs)))
    per_job = {kind: (counts[kind, args.jobs] - counts[kind, 0]) / args.jobs for kind in ("raw", "echo")}
    row("raw Celery task", per_job["raw"] / 1000, "k instr")
    row("echo transform", per_job["echo"] / 1000, "k instr",
        f"(+{(per_job['echo'] - per_job['raw']) / 1000:.0f}k, {per_job['echo'] / per_job['raw']:.2f}x raw)")


if __name__ == "__main__":
    main()
