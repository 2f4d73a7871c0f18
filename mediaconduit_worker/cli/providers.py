"""``mediaconduit providers show|update``: provider sources and their pinned commits."""

from __future__ import annotations

import click

from .output import print_json


@click.group()
def providers() -> None:
    """Provider sources and their pinned commits."""


@providers.command("show")
@click.argument("url")
def providers_show(url: str) -> None:
    """Fetch (or reuse) a provider and print its manifest and pinned source."""
    from ..worker.loader import get_registry

    manifest, checkout = get_registry().manifest(url)
    print_json({"source": checkout.describe(), "manifest": manifest.model_dump(mode="json", by_alias=True)})


@providers.command("update")
@click.argument("url")
def providers_update(url: str) -> None:
    """Fetch a provider's ref again and move its pin."""
    from ..sources import SourceCache, check_allowed, parse_source

    check_allowed(url)
    print_json(SourceCache().materialise(parse_source(url), update=True).describe())


def _add_toolkit() -> None:
    """``providers new`` and ``providers validate`` live in modules of their own."""
    from .scaffold import providers_new
    from .validate import providers_validate

    providers.add_command(providers_new)
    providers.add_command(providers_validate)


_add_toolkit()
