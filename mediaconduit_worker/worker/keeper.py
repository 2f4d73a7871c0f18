"""One thread per process renews every lease the process holds: route concurrency slots (``limits``) and
result-cache claims (``cache``).

A lease is a Redis entry that expires unless renewed, so a process that dies frees what it held by
itself; a live one must renew each lease before it lapses. Each lease is renewed a third of its time to
live after its last renewal, by a callable that says whether it still held (False: it had lapsed, and
is dropped). A Redis error keeps the lease and tries again next round: the lease covers a few misses.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
IDLE_WAKE = 5.0
"""Seconds the thread sleeps at most with nothing due (a new earlier lease wakes it at once)."""


class LeaseKeeper:
    """Renews the leases this process holds from one daemon thread (started on first use, and again in a
    forked child, which holds none of its parent's leases)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[Callable[[], bool], float, float]] = {}  # name -> (renew, ttl s, renew at)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._next = 0.0  # when the thread wakes next (monotonic)
        self._pid = 0

    def hold(self, name: str, ttl: float, renew: Callable[[], bool]) -> None:
        """Renew the lease ``name`` (``ttl`` seconds to live) with ``renew`` until it is dropped."""
        due = time.monotonic() + ttl / 3
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._held.clear()
                threading.Thread(target=self._run, name="mediaconduit-leases", daemon=True).start()
            self._held[name] = (renew, ttl, due)
            earlier = due < self._next
        if earlier:
            self._wake.set()

    def drop(self, name: str) -> None:
        """Stop renewing ``name`` (released, or left to lapse)."""
        with self._lock:
            self._held.pop(name, None)

    def holds(self, name: str) -> bool:
        with self._lock:
            return name in self._held

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [(name, renew, ttl) for name, (renew, ttl, at) in self._held.items() if at <= now]
            for name, renew, ttl in due:
                try:
                    renewed = renew()
                except Exception as exc:  # a Redis blip, or a bug: the thread must go on for the other leases
                    log.warning("renewing lease %s failed: %s", name, exc)
                    renewed = True  # try again next round; the lease may still hold
                with self._lock:
                    if name not in self._held:
                        continue
                    if renewed:
                        self._held[name] = (renew, ttl, time.monotonic() + ttl / 3)
                    else:
                        log.warning("lease %s lapsed before it was renewed", name)
                        del self._held[name]
            with self._lock:
                # Sleep until the next renewal is due; hold() wakes the thread only for an earlier one, so a
                # job does not pay for a thread switch.
                self._next = min(min((at for _, _, at in self._held.values()), default=float("inf")),
                                 time.monotonic() + IDLE_WAKE)
                wait = self._next - time.monotonic()
            self._wake.wait(max(wait, 0.0))
            self._wake.clear()


keeper = LeaseKeeper()
"""This process's keeper (no thread until the first lease)."""
