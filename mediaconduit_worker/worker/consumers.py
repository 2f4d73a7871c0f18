"""Consumer leases: which receivers of the broker are alive, and taking back what the dead ones held.

Every channel that receives jobs (``transport.Channel``) is a *consumer* with an id of its own. It holds
each message it took in an in-flight list of its own (``mediaconduit:inflight:<id>|<source list>``)
until the job is acknowledged, and proves it is alive with a lease, a Redis key that expires
``lease_seconds`` (``MEDIACONDUIT_WORKER_LEASE``, 15) after its last renewal. One thread per process
renews the leases of its open consumers every third of that, and each round also sweeps: a listed
consumer whose lease is gone is dead (its process was killed, its machine lost), and everything it held
goes back to the front of the lists it came from (``lua/transport_reclaim.lua``, one atomic script).
So a dead worker's jobs run again within ``lease_seconds`` plus a third of it (20 s by default), and a
live worker keeps its jobs however long they run: nothing is redelivered on a timer.

A consumer that stalls past its whole lease (a process stopped, a thread starved of the GIL for 15 s)
is taken for dead and its jobs may run twice; it lists itself again at its next renewal.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from functools import cache
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

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
LUA = Path(__file__).with_name("lua")


@cache
def script_source(name: str) -> str:
    return (LUA / f"{name}.lua").read_text(encoding="utf-8")


def new_consumer_id() -> str:
    """Host, process and a random part: readable in ``redis-cli``, never shared by two channels."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def inflight_key(consumer: str, source: str) -> str:
    return f"{INFLIGHT_PREFIX}{consumer}|{source}"


class Consumer(Protocol):
    """What the lease thread needs of a channel."""

    consumer_id: str

    def renew_lease(self) -> bool:
        """Renew this consumer's lease; False once it is closed (its lease is dropped)."""

    def sweep(self) -> int:
        """Hand back the messages of every dead consumer; how many went back."""


def reclaim(client: Any, consumer: str = "", *, drop: bool = False) -> int:
    """Hand the messages of dead consumers back (or all of ``consumer``'s, and unlist it with ``drop``)."""
    args = {"lease": LEASE_PREFIX, "inflight": INFLIGHT_PREFIX, "mark": REDELIVERED_MARK,
            "forget": FORGET_AFTER, "only": consumer, "drop": drop}
    script = client.register_script(script_source("transport_reclaim"))
    return int(script(keys=[CONSUMERS_KEY, DEAD_KEY], args=[json.dumps(args, separators=(",", ":"))], client=client))


def renew(client: Any, consumer: str, sources: list[str], lease_seconds: float) -> None:
    """The lease first, then the listing: a sweep never sees a listed consumer without a lease it just set."""
    with client.pipeline(transaction=False) as pipe:
        pipe.set(LEASE_PREFIX + consumer, "1", px=int(lease_seconds * 1000))
        pipe.hset(CONSUMERS_KEY, consumer, json.dumps(sources, separators=(",", ":")))
        pipe.hdel(DEAD_KEY, consumer)
        pipe.execute()


class LeaseThread:
    """One daemon thread per process renewing the leases of its open consumers and sweeping for dead ones
    every third of the shortest lease (started on first use, and again in a forked child)."""

    def __init__(self) -> None:
        self._consumers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pid = 0
        self._every = 5.0

    def hold(self, consumer: Consumer, lease_seconds: float) -> None:
        with self._lock:
            self._every = min(self._every, lease_seconds / 3)
            if self._pid != os.getpid():  # a forked child holds none of its parent's consumers
                self._pid = os.getpid()
                self._consumers = weakref.WeakSet()
                threading.Thread(target=self._run, name="mediaconduit-consumer-leases", daemon=True).start()
            self._consumers.add(consumer)

    def consumers(self) -> list[Any]:
        with self._lock:
            return list(self._consumers)

    def _run(self) -> None:
        while True:
            time.sleep(self._every)
            swept = False
            for consumer in self.consumers():
                try:
                    if not consumer.renew_lease():
                        with self._lock:
                            self._consumers.discard(consumer)
                        continue
                    if not swept:  # one sweep per round and process is enough: each is atomic and complete
                        if moved := consumer.sweep():
                            log.warning("handed %d job(s) of dead worker(s) back to their queues", moved)
                        swept = True
                except Exception as exc:  # a Redis blip: the lease covers two missed rounds
                    log.warning("renewing the lease of consumer %s failed: %s", consumer.consumer_id, exc)


LEASES = LeaseThread()
