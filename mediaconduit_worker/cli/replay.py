"""``mediaconduit replay RESULT.json|TASK_ID [--verify]``: run a result's chain again from its record."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def load_result(ref: str, timeout: float) -> dict[str, Any]:
    """A result from a JSON file, or from the result backend by task id."""
    path = Path(ref)
    if path.is_file():
        try:
            value = json.loads(path.read_text())
        except ValueError as exc:
            raise click.ClickException(f"{ref}: not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise click.ClickException(f"{ref}: expected a TransformResult object, got {type(value).__name__}")
        return value
    from celery.result import AsyncResult

    from ..worker.app import app

    found = AsyncResult(ref, app=app)
    if found.state != "SUCCESS":
        why = "unknown or expired" if found.state == "PENDING" else found.state.lower()
        raise click.ClickException(f"{ref!r} is neither a file nor a task id with a result in the backend ({why})")
    return dict(found.get(timeout=timeout))


def _consent(planned: list[Any], yes: bool) -> None:
    """With no allow-list, a record from elsewhere chooses the code workers fetch and run: run it only
    when told to (``--yes``, or a yes at a terminal); elsewhere fail naming what it would fetch."""
    from ..sources import allow_list_is_set

    if allow_list_is_set() or yes:
        return
    listed = "; ".join(str(f) for f in planned)
    if sys.stdin.isatty() and sys.stderr.isatty():
        if click.confirm(f"no MEDIACONDUIT_PROVIDER_ALLOW is set: fetch and run {listed}?", err=True):
            return
        raise click.ClickException("replay not confirmed")
    raise click.ClickException(f"no MEDIACONDUIT_PROVIDER_ALLOW is set and replay would fetch and run {listed}; "
                               "pass --yes to run it")


@click.command()
@click.argument("ref", metavar="RESULT.json|TASK_ID")
@click.option("--verify", is_flag=True, help="Compare each step's output digest with the record's; exit 1 on a difference.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for the replayed chain (workers serving its queues must be running).")
@click.option("--yes", is_flag=True, help="Run the record's providers and services with no allow-list set.")
def replay(ref: str, verify: bool, as_json: bool, timeout: float, yes: bool) -> None:
    """Re-run the chain behind a result from its record alone.

    Each step runs the recorded provider at its recorded commit (its Docker service too), with the
    recorded model and options; redacted secrets come from the worker's environment. The first
    step gets the original input: text as recorded, media from the blob store by digest. What it
    would fetch is shown first; anything outside MEDIACONDUIT_PROVIDER_ALLOW is refused, and with no
    allow-list set it runs only with --yes.
    """
    from celery.exceptions import TimeoutError as ResultTimeout
    from rich.console import Console
    from rich.table import Table

    from ..errors import MediaConduitError
    from ..worker.app import transform
    from ..worker.broker import ensure_broker
    from ..worker.replay_plan import compare, fetches, plan, refuse_unallowed, submit
    from .output import on_interrupt, table_console
    from .waiting import job_failed, require_workers, wait_result

    console = Console(stderr=True)
    try:
        original, steps = plan(load_result(ref, timeout))
        planned = fetches(steps)
        refuse_unallowed(planned)
    except MediaConduitError as exc:
        raise click.ClickException(str(exc)) from None
    for fetch in planned:
        click.echo(f"fetches {fetch}", err=True)
    _consent(planned, yes)
    ensure_broker()
    require_workers([str(s.execution["capability"]) for s in steps if s.execution.get("capability")])
    job = submit(transform, original, steps)
    on_interrupt(f"the replayed chain keeps running (its last job: {job.id})")
    with console.status(f"replaying {len(steps)} step(s) through the queue"):
        try:
            replayed = wait_result(job, timeout)
        except ResultTimeout:
            raise click.ClickException(f"the replayed chain has no result after {timeout:g}s (--timeout); it keeps "
                                       f"running (its last job: {job.id})") from None
        except Exception as exc:  # the job's own error, raised again here by Celery
            raise job_failed(job, exc) from None
    rows = compare(steps, replayed)
    differ = [r for r in rows if not r["same"]]
    if as_json:
        fetched = [{"step": f.step, "kind": f.kind, "url": f.url} for f in planned]
        click.echo(json.dumps({"steps": rows, "same": not differ, "fetched": fetched, "result": replayed}, indent=2))
    else:
        table = Table("step", "model", "provider", "recorded output", "replayed output", "verdict")
        for r in rows:
            verdict = "[green]same[/]" if r["same"] else "[red]different[/]"
            table.add_row(str(r["step"]), r["model"], r["provider_url"], (r["recorded"] or "-")[:16],
                          (r["replayed"] or "-")[:16], verdict)
        table_console().print(table)
        if differ:
            named = ", ".join(f"step {r['step']} ({r['model']})" for r in differ)
            Console().print(f"different: {named}", highlight=False)
    if verify and differ:
        raise SystemExit(1)
