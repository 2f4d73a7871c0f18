"""The scaling signal: per queue, (queued + reserved + running) / slots, from Redis alone.

The length of a queue's list is the work nobody took yet. A worker's prefetched jobs (reserved) and its
running ones have left the list: a list that looks empty while every slot is busy scales a deployment
down mid-task (the reason KEDA's list-length trigger misses them). Here both are counted where they
are: MediaConduit's transport holds every message it took in its consumer's in-flight list until the
job is acknowledged (``consumers.inflight_key``; ``task_acks_late`` keeps a running job there), kombu's
own transport in its ``unacked`` table. Slots are what each live worker announces
(``mediaconduit:slots:<node>``, renewed by its lease keeper, gone ``MEDIACONDUIT_WORKER_LEASE`` seconds
after it stops). With no slot at all the signal is the work itself, so any work wakes a deployment
scaled to zero.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from celery import signals

from ...settings import get_settings
from ..keeper import keeper
from ..redis_state import state_redis

log = logging.getLogger(__name__)
SLOTS_PREFIX = "mediaconduit:slots:"
"""Key per worker node: JSON ``{"queues": [...], "slots": N}``, expiring unless renewed."""
KOMBU_PRIORITY_STEPS = (3, 6, 9)
"""kombu's own transport keeps priorities 3, 6 and 9 of a queue in lists of their own."""


@dataclass(frozen=True)
class QueueLoad:
    """One queue's work and capacity now."""

    queue: str
    queued: int
    """Messages in the queue's list: taken by nobody yet."""
    held: int
    """Messages workers took and have not acknowledged: prefetched (reserved) and running."""
    slots: int
    """Slots of the live workers that consume the queue."""

    @property
    def signal(self) -> float:
        work = self.queued + self.held
        return work / self.slots if self.slots else float(work)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "signal": round(self.signal, 6)}


def _announcement(worker: Any) -> tuple[str, str]:
    queues = sorted(worker.app.amqp.queues.consume_from)
    return SLOTS_PREFIX + worker.hostname, json.dumps({"queues": queues, "slots": int(worker.controller.concurrency)})


@signals.worker_ready.connect
def _announce_slots(sender: Any = None, **_: Any) -> None:
    """A worker announces its queues and slots, and keeps the announcement alive while it lives."""
    if sender is None:
        return
    try:
        key, value = _announcement(sender)
    except Exception as exc:  # a worker without a pool's concurrency (never in our CLI): no announcement
        log.warning("could not tell this worker's slots: %s", exc)
        return
    ttl = get_settings().worker_lease
    client = state_redis(get_settings().effective_broker_url)

    def renew() -> bool:
        client.set(key, value, px=int(ttl * 1000))
        return True

    try:
        renew()
    except Exception as exc:  # the keeper tries again; a scaling signal is not worth a failed start
        log.warning("could not announce this worker's slots: %s", exc)
    keeper.hold(key, ttl, renew)


@signals.worker_shutdown.connect
def _withdraw_slots(sender: Any = None, **_: Any) -> None:
    if sender is None or not getattr(sender, "hostname", None):
        return
    key = SLOTS_PREFIX + sender.hostname
    keeper.drop(key)
    try:
        state_redis(get_settings().effective_broker_url).delete(key)
    except Exception as exc:
        log.warning("could not withdraw this worker's slots: %s", exc)


_quick: dict[str, Any] = {}


def quick_redis(url: str | None = None) -> Any:
    """A client that answers within two seconds or fails, without retries: a scrape must not hang on a
    Redis that is down (the state client retries for many seconds)."""
    import redis

    from ..redis_state import redis_url

    url = url or get_settings().effective_broker_url
    client = _quick.get(url)
    if client is None:
        client = _quick[url] = redis.Redis.from_url(redis_url(url), decode_responses=True, socket_timeout=2.0,
                                                    socket_connect_timeout=2.0)
    return client


def queue_loads(queues: list[str] | None = None, client: Any = None) -> list[QueueLoad]:
    """The load of ``queues`` (default: the capability queues, the default queue and any a live worker
    announces), read from the broker's Redis."""
    from ..app import CAPABILITY_QUEUES, DEFAULT_QUEUE
    from ..consumers import CONSUMERS_KEY, inflight_key

    client = client or state_redis(get_settings().effective_broker_url)
    keys = list(client.scan_iter(SLOTS_PREFIX + "*", count=1000))
    announced = [json.loads(v) for v in (client.mget(keys) if keys else []) if v]
    names = list(queues or dict.fromkeys([*CAPABILITY_QUEUES, DEFAULT_QUEUE, *(q for a in announced for q in a["queues"])]))
    kombu = get_settings().broker_transport == "kombu"
    consumers = {c: json.loads(s) for c, s in client.hgetall(CONSUMERS_KEY).items()}
    held_lists = [(source, inflight_key(c, source)) for c, sources in consumers.items() for source in sources
                  if source in names]
    with client.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.llen(q)
            for step in KOMBU_PRIORITY_STEPS if kombu else ():
                pipe.llen(f"{q}\x06\x16{step}")
        for _, key in held_lists:
            pipe.llen(key)
        if kombu:
            pipe.hvals("unacked")
        replies = pipe.execute()
    per = 1 + (len(KOMBU_PRIORITY_STEPS) if kombu else 0)
    queued = {q: sum(replies[i * per:(i + 1) * per]) for i, q in enumerate(names)}
    held = dict.fromkeys(names, 0)
    for (source, _), count in zip(held_lists, replies[len(names) * per:]):
        held[source] += int(count)
    if kombu:
        for raw in replies[-1]:
            try:
                routing_key = json.loads(raw)[-1]
            except (ValueError, IndexError, TypeError):
                continue
            if routing_key in held:
                held[routing_key] += 1
    slots = dict.fromkeys(names, 0)
    for a in announced:
        for q in a["queues"]:
            if q in slots:
                slots[q] += int(a["slots"])
    return [QueueLoad(q, int(queued[q]), held[q], slots[q]) for q in names]
