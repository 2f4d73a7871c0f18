"""Step: the result record is built, once, from what the steps after it put in the run's builder."""

from __future__ import annotations

import time
from collections.abc import Callable

from ...manifest import undeclared_options
from .run import Run


def build_result(run: Run, proceed: Callable[[], None]) -> None:
    proceed()
    served = run.served
    assert served is not None  # the serve step ran
    if served.route is not None:
        run.record.note(candidate=served.candidate, attempts=served.attempts)
    manifest = served.loaded.manifest
    warnings = undeclared_options(manifest.parameters_of(served.runnable.id), run.job.options,
                                  f"provider {manifest.id!r} model {served.runnable.id!r}")
    if warnings:
        run.record.note(warnings=warnings)
    run.result = run.record.build(served.output, processing_time_ms=round((time.perf_counter() - run.started) * 1000, 3),
                                  task_id=run.request.id, worker=run.request.hostname)
