"""A real Celery worker that records, per job, which of the package's files run: from the message's
arrival (``task_received``) to the stored result (``task_postrun``), in the worker's main thread (run it
with ``-P solo``, where the whole job happens there). Each job's files go to
``$MEDIACONDUIT_TRACE_DIR/<task id>.json``, relative to the package. Arguments are celery's."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from celery import signals
from celery.__main__ import main

import mediaconduit_worker

PACKAGE = Path(mediaconduit_worker.__file__).resolve().parent
OUT = Path(os.environ["MEDIACONDUIT_TRACE_DIR"])
_files: set[str] = set()
_prefix = str(PACKAGE) + os.sep


def _profile(frame: Any, event: str, arg: Any) -> None:
    if event == "call":
        name = frame.f_code.co_filename
        if name.startswith(_prefix):
            _files.add(name[len(_prefix):])


@signals.task_received.connect
def _start(**_: Any) -> None:
    _files.clear()
    sys.setprofile(_profile)


@signals.task_postrun.connect
def _stop(task_id: str | None = None, **_: Any) -> None:
    sys.setprofile(None)
    partial = OUT / f"{task_id}.partial"
    partial.write_text(json.dumps(sorted(_files)))
    partial.rename(OUT / f"{task_id}.json")  # whole, or not there yet


if __name__ == "__main__":
    sys.argv = ["celery", *sys.argv[1:]]
    sys.exit(main())
