"""``mediaconduit submit``: one job from the command line, its result printed."""

from __future__ import annotations

import json
from typing import Any

import click

from .output import CommandError, on_interrupt, print_json


@click.command()
@click.argument("input")
@click.option("--provider", required=True,
              help="Provider URL: a folder, a git URL (…#subdirectory=PATH), pypi:NAME; or route:NAME.")
@click.option("--model", default=None, help="Model id (none for a route:NAME, which chooses its own).")
@click.option("--option", "-o", "options", multiple=True, help="key=value (value parsed as JSON when it can be).")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait for the result (a worker serving its queue must be running).")
def submit(input: str, provider: str, model: str | None, options: tuple[str, ...], timeout: float) -> None:
    """Send one transform and print its result.

    The provider and model are checked here first, so a bad URL or model fails before anything is queued,
    and so does a queue no worker serves.
    """
    from celery.exceptions import TimeoutError as ResultTimeout

    from ..worker.app import transform
    from .batch import absolute_provider, check_step
    from .waiting import job_failed, require_workers, wait_result
    from .worker import connect_broker

    opts = _parse_options(options)
    provider = absolute_provider(provider)
    queue = check_step(provider, model, opts)
    connect_broker()
    require_workers([queue])
    job = transform.delay(input, provider, model, opts)
    on_interrupt(f"job {job.id} keeps running on queue {queue!r}")
    try:
        result = wait_result(job, timeout)
    except ResultTimeout:
        raise CommandError(f"job {job.id} has no result after {timeout:g}s (--timeout); it stays queued or running on "
                           f"{queue!r} (`mediaconduit status` shows the workers)") from None
    except Exception as exc:
        raise job_failed(job, exc) from None
    print_json(result)


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--option")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out
