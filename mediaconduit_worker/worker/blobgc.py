"""Blob garbage collection: blobs nothing refers to any more are removed once a grace period has passed.

"Refers to" is read conservatively: every value in the broker's and the result backend's Redis (stored
results and their arguments, cached results, queued and unacknowledged jobs, whose bodies kombu keeps
base64-encoded, batch state) is searched for 64-hex-digit digests, and any blob whose digest appears is
kept. So is every blob written or used within the grace period (``MEDIACONDUIT_BLOB_GC_GRACE``, 24 h):
a job being produced or running holds references no Redis value shows yet, and a job reading a blob
refreshes its time (``BlobStore.claim``). Writes a crash left in ``incoming/`` go after the grace period
too. A blob is checked again just before it is removed, so one claimed during the sweep is kept.

Workers sweep every ``MEDIACONDUIT_BLOB_GC_INTERVAL`` seconds (a thread of the main process, started
when the worker is ready); a Redis key set with NX for the interval lets one worker of the fleet do it.
``mediaconduit blobs gc`` sweeps on demand.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from celery import signals

from ..blobs import INCOMING, BlobStore
from ..errors import ConfigurationError
from ..settings import get_settings
from .redis_state import CONNECT_TIMEOUT, client_for

log = logging.getLogger(__name__)
LOCK_KEY = "mediaconduit-blob-gc"
"""Set (NX, expiring after the interval) by the worker whose turn it is to sweep."""
_DIGEST = re.compile(rb"[0-9a-f]{64}")
_BODY = re.compile(rb'"body"\s*:\s*"([A-Za-z0-9+/=]+)"')
"""A kombu message's body (base64) inside a queued or unacknowledged message."""
_BATCH = 1000
REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "unix://", "sentinel://")


@dataclass
class Sweep:
    """What one garbage collection found and did (``removed`` lists digests, or would with ``dry_run``)."""

    grace: float
    dry_run: bool
    keys_scanned: int = 0
    referenced: int = 0
    young: int = 0
    removed: list[str] = field(default_factory=list)
    removed_bytes: int = 0
    partial_removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"grace": self.grace, "dry_run": self.dry_run, "keys_scanned": self.keys_scanned,
                "kept_referenced": self.referenced, "kept_young": self.young, "removed": len(self.removed),
                "removed_bytes": self.removed_bytes, "partial_writes_removed": self.partial_removed}


def _digests(raw: bytes) -> Iterator[bytes]:
    yield from _DIGEST.findall(raw)
    for body in _BODY.findall(raw):
        try:
            yield from _DIGEST.findall(base64.b64decode(body))
        except (binascii.Error, ValueError):
            continue


def _values(client: Any, key: bytes) -> Iterator[bytes]:
    """Every value held under ``key``, whatever its type, read in batches."""
    kind = client.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "string":
        value = client.get(key)
        if value is not None:
            yield value
    elif kind == "list":
        for start in range(0, client.llen(key), _BATCH):
            yield from client.lrange(key, start, start + _BATCH - 1)
    elif kind == "hash":
        for name, value in client.hscan_iter(key, count=_BATCH):
            yield name
            yield value
    elif kind == "set":
        yield from client.sscan_iter(key, count=_BATCH)
    elif kind == "zset":
        for member, _score in client.zscan_iter(key, count=_BATCH):
            yield member
    elif kind == "stream":
        for _id, entry in client.xrange(key):
            yield from entry.values()


def referenced(clients: Iterable[Any], sweep: Sweep) -> set[str]:
    """The digests any key or value in these Redis databases names (``clients`` decode no responses)."""
    found: set[str] = set()
    for client in clients:
        for key in client.scan_iter(count=_BATCH):
            sweep.keys_scanned += 1
            found.update(d.decode() for d in _DIGEST.findall(key))
            for value in _values(client, key):
                if isinstance(value, str):
                    value = value.encode()
                found.update(d.decode() for d in _digests(value))
    return found


def redis_clients() -> list[Any]:
    """Clients of the broker's and the result backend's Redis (one when they are the same database).

    URLs are read as ``redis_state`` reads them; the clients are this sweep's own and return raw bytes
    (the state client decodes to ``str``, and one value that is not UTF-8 must not stop a sweep).
    """
    settings = get_settings()
    urls = list(dict.fromkeys([settings.effective_broker_url, settings.effective_result_backend]))
    for url in urls:
        if not url.lower().startswith(REDIS_SCHEMES):
            scheme = url.split(":", 1)[0]
            raise ConfigurationError(f"blob garbage collection reads queued jobs and results from Redis; "
                                     f"{scheme}:// (the broker or result backend) is not Redis, so nothing is removed")
    return [client_for(url, socket_connect_timeout=CONNECT_TIMEOUT) for url in urls]


def collect(store: BlobStore, clients: Iterable[Any], grace: float | None = None, dry_run: bool = False) -> Sweep:
    """Remove blobs no Redis value names that are older than ``grace`` seconds (default: the setting)."""
    grace = float(get_settings().blob_gc_grace if grace is None else grace)
    sweep = Sweep(grace=grace, dry_run=dry_run)
    cutoff = time.time() - grace  # taken first: whatever is written or claimed from now on is younger
    names = referenced(clients, sweep)
    for path in sorted((store.root / "sha256").glob("??/*")):
        if path.name in names:
            sweep.referenced += 1
            continue
        try:
            if path.stat().st_mtime >= cutoff:
                sweep.young += 1
                continue
            size = path.stat().st_size
            if not dry_run:
                if path.stat().st_mtime >= cutoff:  # claimed while the references were read
                    sweep.young += 1
                    continue
                path.unlink()
        except FileNotFoundError:  # another sweep got there first
            continue
        sweep.removed.append(path.name)
        sweep.removed_bytes += size
    for tmp in (store.root / INCOMING).glob(".tmp-*"):
        try:
            if tmp.stat().st_mtime < cutoff:
                if not dry_run:
                    tmp.unlink()
                sweep.partial_removed += 1
        except FileNotFoundError:
            continue
    return sweep


def sweep_if_due(interval: float, owner: str) -> Sweep | None:
    """One sweep, unless another worker took this interval's turn (the NX key)."""
    clients = redis_clients()
    if not clients[-1].set(LOCK_KEY, owner, nx=True, ex=max(1, int(interval))):
        return None
    sweep = collect(BlobStore(), clients)
    if sweep.removed or sweep.partial_removed:
        log.info("blob gc: removed %d blobs (%d bytes) and %d partial writes; kept %d referenced, %d younger "
                 "than %gs", len(sweep.removed), sweep.removed_bytes, sweep.partial_removed, sweep.referenced,
                 sweep.young, sweep.grace)
    return sweep


def _every(interval: float, owner: str) -> None:
    while True:
        try:
            sweep_if_due(interval, owner)
        except Exception as exc:  # the next interval tries again; a worker never stops for its janitor
            log.warning("blob gc failed: %s: %s", type(exc).__name__, exc)
        time.sleep(interval)


@signals.worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    interval = get_settings().blob_gc_interval
    if interval <= 0:
        return
    owner = f"{getattr(sender, 'hostname', None) or 'worker'}:{os.getpid()}"
    threading.Thread(target=_every, args=(interval, owner), name="mediaconduit-blob-gc", daemon=True).start()
