"""CPU instructions each step of the transform task's body costs on a warm echo job, counted by callgrind.

Each step is called on a prepared run with ``proceed`` doing nothing, so a figure is the step's own work
(the deadline step's is its timer and context switch around the rest; the serve step's is the provider's
call). The yardstick, in the same run: the whole body (``run_steps`` over every step) on the same job, and
the raw Celery task's traced cost is in ``bench_instructions.py``. No broker is needed: nothing here
touches Redis. Each figure is (a process running N calls minus one running none) / N.

    python bench/bench_steps.py [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count_calls, git_mirror, row

#: The steps measured alone, in the pipeline's order, and the whole body.
STEPS = ("scrub_secrets", "stop_when_interrupted", "validate", "retry_transient", "hold_deadline", "pin_service",
         "answer_from_cache", "build_result", "complete_provenance", "serve")
WHOLE = "run_steps"


class _Task:
    """What the steps ask of a task outside a worker: nothing is retried on a warm echo job."""

    def retry(self, **_: Any) -> Exception:
        raise AssertionError("a warm echo job is not retried")


def measured(name: str, calls: int, url: str) -> None:
    """Runs under valgrind: ``calls`` calls of one step (or of the whole body) after a warm-up."""
    os.environ["MEDIACONDUIT_HOME"] = tempfile.mkdtemp(prefix="mediaconduit-bench-")
    from mediaconduit_worker.worker import pipeline

    request = types.SimpleNamespace(id="bench-task", hostname="bench@host", retries=0, timelimit=(60, 60))
    args = ("hello", url, "echo", None)

    def new_run() -> Any:
        return pipeline.Run(_Task(), request, args)

    def noop() -> None:
        pass

    prepared = new_run()
    pipeline.validate(prepared, noop)
    pipeline.hold_deadline(prepared, noop)
    pipeline.serve(prepared, noop)  # loads the provider: the job is warm from here on
    served = prepared.served
    assert served is not None

    def one() -> None:
        if name == WHOLE:
            pipeline.run_steps(pipeline.STEPS, new_run())
        elif name == "validate":
            pipeline.validate(new_run(), noop)
        elif name in ("build_result", "complete_provenance"):
            run = new_run()
            run.job, run.served = prepared.job, served
            served.output.metadata.pop("generation_prompt", None)
            if name == "build_result":
                pipeline.complete_provenance(run, noop)
            getattr(pipeline, name)(run, noop)
        else:
            run = new_run()
            run.job, run.deadline = prepared.job, prepared.deadline
            getattr(pipeline, name)(run, noop)

    for _ in range(30 + calls):
        one()



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--measure")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.measure:
        return measured(args.measure, args.calls, args.url)
    url = git_mirror("echo-provider")
    names = [*STEPS, WHOLE]
    # build_result's run also completes the prompt (it needs one): its own figure is the difference.
    runs = [(n, c) for n in names for c in (0, args.calls)]
    print(f"instructions per call, callgrind, {args.calls} calls of each step of a warm echo job:")
    with ThreadPoolExecutor(2) as pool:
        totals = dict(zip(runs, pool.map(lambda r: count_calls(__file__, r[0], r[1], url), runs)))
    per = {n: (totals[n, args.calls] - totals[n, 0]) / args.calls / 1000 for n in names}
    per["build_result"] -= per["complete_provenance"]
    for name in STEPS:
        row(name, per[name], "k instr")
    row("sum of the steps", sum(per[n] for n in STEPS), "k instr")
    row("whole body (run_steps), the yardstick", per[WHOLE], "k instr")


if __name__ == "__main__":
    main()
