"""``mediaconduit submit``: one job from the command line, its result printed."""

from __future__ import annotations

import json
from typing import Any

import click

from .output import CommandError, print_json


@click.command()
@click.argument("input")
@click.option("--provider", required=True,
              help="Provider URL: a folder, a git URL (…#subdirectory=PATH), pypi:NAME; or route:NAME.")
@click.option("--model", default=None, help="Model id (none for a route:NAME, which chooses its own).")
@click.option("--option", "-o", "options", multiple=True, help="key=value (value parsed as JSON when it can be).")
@click.option("--timeout", type=float, default=120.0, help="Seconds to wait for the result.")
def submit(input: str, provider: str, model: str | None, options: tuple[str, ...], timeout: float) -> None:
    """Send one transform and print its result.

    The provider and model are checked here first, so a bad URL or model fails before anything is queued.
    """
    from celery.exceptions import TimeoutError as ResultTimeout

    from ..worker.app import transform
    from .batch import check_step
    from .worker import connect_broker

    opts = _parse_options(options)
    queue = check_step(provider, model, opts)
    connect_broker()
    job = transform.delay(input, provider, model, opts)
    try:
        result = job.get(timeout=timeout)
    except ResultTimeout:
        raise CommandError(f"job {job.id} has no result after {timeout:g}s: is a worker serving queue {queue!r} "
                           "running? (`mediaconduit status`)") from None
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
