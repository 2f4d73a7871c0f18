"""``mediaconduit get TASK_ID``: a finished job's result, or its output asset written as a file."""

from __future__ import annotations

from pathlib import Path

import click

from .output import CommandError, print_json


@click.command()
@click.argument("task_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result's output asset to this file (text as text, media as their bytes).")
def get(task_id: str, output: Path | None) -> None:
    """Print the result record of job TASK_ID, or with -o write its output to a file.

    Exit code 1 when the job has no result (unknown, still queued or running, or failed: its error).
    """
    from ..batch.files import write_output
    from ..batch.states import fetch_states
    from ..errors import InvalidInputError
    from ..worker.app import app

    state = fetch_states(app, [task_id], retry_for=2.0)[task_id]
    if state.state == "FAILURE":
        raise CommandError(f"job {task_id} failed: {state.error}")
    if state.state != "SUCCESS":
        raise CommandError(f"job {task_id} has no result in the result backend (state {state.state}: unknown, "
                           "expired, queued or still running)")
    if output is None:
        print_json(state.result)
        return
    try:
        write_output(state.result, output)
    except InvalidInputError as exc:
        raise CommandError(f"job {task_id}: {exc}") from None
