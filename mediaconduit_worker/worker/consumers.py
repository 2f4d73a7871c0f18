"""Consumer leases: which receivers of the broker are alive, and taking back what the dead ones held.

Every channel that receives jobs (``transport.Channel``) is a *consumer* with an id of its own. It holds
each message it took in an in-flight list of its own (``mediaconduit:inflight:<id>|<source list>``)
until the job is acknowledged, and proves it is alive with a lease, a Redis key that expires
``lease_seconds`` (``MEDIACONDUIT_WORKER_LEASE``, 15) after its last renewal. The process's lease keeper
(``keeper.py``) renews it every third of that, and each renewal also sweeps: a listed
consumer whose lease is gone is dead (its process was killed, its machine lost), and everything it held
goes back to the front of the lists it came from (``lua/transport_reclaim.lua``, one atomic script).
So a dead worker's jobs run again within ``lease_seconds`` plus a third of it (20 s by default), and a
live worker keeps its jobs however long they run: nothing is redelivered on a timer.

A consumer that stalls past its whole lease (a process stopped, a thread starved of the GIL for 15 s)
is taken for dead and its jobs may run twice; it lists itself again at its next renewal.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
import weakref
from typing import Any

from .lua_scripts import named, register

CONSUMERS_KEY = "mediaconduit:consumers"
"""Hash: consumer id -> JSON list of the source lists it receives from."""
DEAD_KEY = "mediaconduit:consumers:dead"
"""Hash: consumer id -> when a sweep first found its lease gone (unix seconds)."""
LEASE_PREFIX = "mediaconduit:consumer:"
INFLIGHT_PREFIX = "mediaconduit:inflight:"
REDELIVERED_MARK = '{"mediaconduit_redelivered":1,'
"""How a handed-back message starts instead of its first ``{``: the receiver marks it redelivered."""
FORGET_AFTER = 3600
"""Seconds a dead consumer stays listed, so one that only stalled finds its jobs where a sweep looks."""


def new_consumer_id() -> str:
    """Host, process and a random part: readable in ``redis-cli``, never shared by two channels."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def inflight_key(consumer: str, source: str) -> str:
    return f"{INFLIGHT_PREFIX}{consumer}|{source}"


OPEN: weakref.WeakSet[Any] = weakref.WeakSet()
"""This process's consumers that hold a lease (``transport.Channel``), for ``transport.hand_back_all``."""


def reclaim(client: Any, consumer: str = "", *, drop: bool = False) -> int:
    """Hand the messages of dead consumers back (or all of ``consumer``'s, and unlist it with ``drop``)."""
    args = named(lease=LEASE_PREFIX, inflight=INFLIGHT_PREFIX, mark=REDELIVERED_MARK, forget=FORGET_AFTER * 1000,
                 only=consumer, drop=drop)
    return int(register(client, "transport_reclaim")(keys=[CONSUMERS_KEY, DEAD_KEY], args=[args], client=client))


def requeue(client: Any, inflight: str, source: str, raw: bytes) -> bool:
    """One held message back to the front of ``source``, unless a sweep already moved it."""
    args = named(message=raw.decode(), mark=REDELIVERED_MARK)
    return bool(register(client, "transport_requeue")(keys=[inflight, source], args=[args], client=client))


def renew(client: Any, consumer: str, sources: list[str], lease_seconds: float) -> None:
    """The lease first, then the listing: a sweep never sees a listed consumer without a lease it just set."""
    with client.pipeline(transaction=False) as pipe:
        pipe.set(LEASE_PREFIX + consumer, "1", px=int(lease_seconds * 1000))
        pipe.hset(CONSUMERS_KEY, consumer, json.dumps(sources, separators=(",", ":")))
        pipe.hdel(DEAD_KEY, consumer)
        pipe.execute()
