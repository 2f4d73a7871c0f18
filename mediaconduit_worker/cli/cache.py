"""``mediaconduit cache stats | clear``: the opt-in result cache in the state Redis (``worker/redis_state.py``).

The figures are read here, not in ``worker/cache.py``, which every cached job imports."""

from __future__ import annotations

import json
from typing import Any

import click

#: Keys are scanned and deleted this many at a time.
BATCH = 1000


@click.group()
def cache() -> None:
    """The result cache (jobs with options.cache, or models with cache: true in their manifest)."""


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_stats(as_json: bool) -> None:
    """Entries, their size, and hits, misses, waits (for an identical job in flight) and stores."""
    from ..worker.redis_state import state_redis

    figures = stats(state_redis())
    if as_json:
        click.echo(json.dumps(figures))
        return
    looked = figures["hits"] + figures["misses"]
    rate = f" ({figures['hits'] / looked:.0%} hits)" if looked else ""
    entries = f"{figures['entries']} entr{'y' if figures['entries'] == 1 else 'ies'}"
    click.echo(f"{entries}, {figures['bytes'] / 1024:.1f} KiB, TTL {figures['ttl']} s\n"
               f"hits {figures['hits']}, misses {figures['misses']}{rate}, waits {figures['waits']}, "
               f"stores {figures['stores']}")


@cache.command("clear")
def cache_clear() -> None:
    """Delete every cached result (jobs in flight keep their claims)."""
    from ..worker.redis_state import state_redis

    click.echo(f"removed {clear(state_redis())} cached results")


def stats(client: Any) -> dict[str, Any]:
    """Entries, their bytes, and hits/misses/waits/stores since the last clear (``client``: the state Redis)."""
    from ..settings import get_settings
    from ..worker.cache import PREFIX, STATS_KEY

    keys = list(client.scan_iter(match=PREFIX + "*", count=BATCH))
    size = 0
    for i in range(0, len(keys), BATCH):
        with client.pipeline(transaction=False) as pipe:
            for k in keys[i:i + BATCH]:
                pipe.strlen(k)
            size += sum(pipe.execute())
    counters = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in client.hgetall(STATS_KEY).items()}
    return {"entries": len(keys), "bytes": size, "ttl": get_settings().cache_ttl,
            **{name: counters.get(name, 0) for name in ("hits", "misses", "waits", "stores")}}


def clear(client: Any) -> int:
    """Delete every cached result and the counters; jobs in flight keep their claims."""
    from ..worker.cache import PREFIX, STATS_KEY

    removed = 0
    batch: list[Any] = []
    for k in client.scan_iter(match=PREFIX + "*", count=BATCH):
        batch.append(k)
        if len(batch) == BATCH:
            removed += client.delete(*batch)
            batch.clear()
    if batch:
        removed += client.delete(*batch)
    client.delete(STATS_KEY)
    return removed
