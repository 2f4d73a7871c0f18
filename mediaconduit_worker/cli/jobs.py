"""``mediaconduit submit``: one job from the command line, its result printed."""

from __future__ import annotations

import json
from typing import Any

import click

from .output import print_json


@click.command()
@click.argument("input")
@click.option("--provider", required=True, help="Provider URL, or route:NAME.")
@click.option("--model", default=None, help="Model id (none for a route:NAME).")
@click.option("--option", "-o", "options", multiple=True, help="key=value (value parsed as JSON when it can be).")
@click.option("--timeout", type=float, default=120.0)
def submit(input: str, provider: str, model: str | None, options: tuple[str, ...], timeout: float) -> None:
    """Send one transform and print its result."""
    from ..worker.broker import ensure_broker
    from ..worker.tasks import transform

    ensure_broker()
    print_json(transform.delay(input, provider, model, _parse_options(options)).get(timeout=timeout))


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
