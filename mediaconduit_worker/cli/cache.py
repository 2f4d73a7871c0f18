"""``mediaconduit cache stats | clear``: the opt-in result cache in the state Redis (``worker/redis_state.py``)."""

from __future__ import annotations

import json

import click


@click.group()
def cache() -> None:
    """The result cache (jobs with options.cache, or models with cache: true in their manifest)."""


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_stats(as_json: bool) -> None:
    """Entries, their size, and hits, misses, waits (for an identical job in flight) and stores."""
    from ..worker.cache import stats
    from ..worker.redis_state import state_redis

    figures = stats(state_redis())
    if as_json:
        click.echo(json.dumps(figures))
        return
    looked = figures["hits"] + figures["misses"]
    rate = f" ({figures['hits'] / looked:.0%} hits)" if looked else ""
    click.echo(f"{figures['entries']} entries, {figures['bytes'] / 1024:.1f} KiB, TTL {figures['ttl']} s\n"
               f"hits {figures['hits']}, misses {figures['misses']}{rate}, waits {figures['waits']}, "
               f"stores {figures['stores']}")


@cache.command("clear")
def cache_clear() -> None:
    """Delete every cached result (jobs in flight keep their claims)."""
    from ..worker.cache import clear
    from ..worker.redis_state import state_redis

    click.echo(f"removed {clear(state_redis())} cached results")
