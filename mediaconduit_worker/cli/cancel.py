"""``mediaconduit cancel TASK_ID``: a job cancelled for good, queued or running."""

from __future__ import annotations

import json

import click

from .output import CommandError


@click.command()
@click.argument("task_ids", nargs=-1, required=True, metavar="TASK_ID...")
@click.option("--reason", default="cancelled from the command line", show_default=True,
              help="Why, stored with the job's REVOKED state.")
def cancel(task_ids: tuple[str, ...], reason: str) -> None:
    """Cancel jobs: a queued one never runs (even on a worker started later), a running one is stopped
    (a remote prediction is cancelled too), and later steps of its chain are cancelled with it.

    Exits 0 when every job is cancelled, 1 when one had already finished (it is left as it is)."""
    from celery import states

    from ..worker.app import app
    from .worker import connect_broker

    connect_broker()
    backend = app.backend
    finished = {t: backend.get_state(t) for t in task_ids}
    finished = {t: s for t, s in finished.items() if s in states.READY_STATES}
    wanted = [t for t in task_ids if t not in finished]
    if wanted:
        app.control.revoke(wanted, reason=reason)
        for task_id in wanted:
            click.echo(json.dumps({"task_id": task_id, "state": "REVOKED", "reason": reason}))
    if finished:
        shown = ", ".join(f"{t} ({s})" for t, s in finished.items())
        raise CommandError(f"already finished, not cancelled: {shown}")
