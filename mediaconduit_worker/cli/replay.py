"""``mediaconduit replay RESULT.json|TASK_ID [--verify]``: run a result's chain again from its record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _load_result(ref: str, timeout: float) -> dict[str, Any]:
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


@click.command()
@click.argument("ref", metavar="RESULT.json|TASK_ID")
@click.option("--verify", is_flag=True, help="Compare each step's output digest with the record's; exit 1 on a difference.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--timeout", type=float, default=600.0, help="Seconds to wait for the replayed chain.")
def replay(ref: str, verify: bool, as_json: bool, timeout: float) -> None:
    """Re-run the chain behind a result from its record alone.

    Each step runs the recorded provider at its recorded commit (its Docker service too), with the
    recorded model and options; redacted secrets come from the worker's environment. The first
    step gets the original input: text as recorded, media from the blob store by digest.
    """
    from rich.console import Console
    from rich.table import Table

    from ..errors import MediaConduitError
    from ..worker.app import transform
    from ..worker.broker import ensure_broker
    from ..worker.replay import compare, plan, submit

    console = Console(stderr=True)
    try:
        original, steps = plan(_load_result(ref, timeout))
    except MediaConduitError as exc:
        raise click.ClickException(str(exc)) from None
    ensure_broker()
    with console.status(f"replaying {len(steps)} step(s) through the queue"):
        try:
            replayed = submit(transform, original, steps).get(timeout=timeout)
        except Exception as exc:  # the job's own error, raised again here by Celery
            raise click.ClickException(f"the replayed chain failed: {type(exc).__name__}: {exc}") from None
    rows = compare(steps, replayed)
    differ = [r for r in rows if not r["same"]]
    if as_json:
        click.echo(json.dumps({"steps": rows, "same": not differ, "result": replayed}, indent=2))
    else:
        table = Table("step", "model", "provider", "recorded output", "replayed output", "verdict")
        for r in rows:
            verdict = "[green]same[/]" if r["same"] else "[red]different[/]"
            table.add_row(str(r["step"]), r["model"], r["provider_url"], (r["recorded"] or "-")[:16],
                          (r["replayed"] or "-")[:16], verdict)
        Console().print(table)
        if differ:
            named = ", ".join(f"step {r['step']} ({r['model']})" for r in differ)
            Console().print(f"different: {named}", highlight=False)
    if verify and differ:
        raise SystemExit(1)
