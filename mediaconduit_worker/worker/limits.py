"""Shared state of route candidates, in Redis: cooldowns, concurrency leases, rate windows, latency and
call counts, spend and budgets.

Why Redis and Lua: every worker process on every machine must see the same cooldown and the same
count of calls in flight, and a check-then-change done in two round trips lets two workers both take
the last slot. Each check-and-change here is one Lua script (``register_script``), so it is atomic,
and every time is the Redis server's clock (``TIME``), so machines with skewed clocks agree.

The scripts are the ``limits_*.lua`` files in ``lua/`` (``lua_scripts.py``); a call's spend is settled
by them alone, atomically with the rest of the call's release (``spend.lua``).

A concurrency slot is a *lease* (a member of a sorted set scored by its expiry): the process holding
it renews it while the call runs (``keeper.py``), and a process that dies stops renewing, so
its slot frees itself within ``lease_ttl`` seconds. Freed slots push a token on a list that waiting
workers ``BLPOP``, so a waiter wakes as soon as a slot frees instead of polling.

State is kept per candidate, i.e. per provider URL + model (``candidate_id``): routes that share a
candidate share its cooldown, limits and latency, as they share the API behind it. One Redis (not a
Redis Cluster) is assumed, as Celery's Redis transport assumes it.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..sources import stable_id
from .keeper import keeper
from .lua_scripts import named, register
from .redis_state import state_redis

PREFIX = "mediaconduit:routing"
STATS_MINUTES = 5
"""Health reports calls and failures over this many minutes."""
LATENCY_SAMPLES = 50
"""The latency strategy's p50 is over a candidate's last successful calls, at most this many..."""
LATENCY_MAX_AGE = 300
"""...and no older than this (seconds): a candidate unused that long is explored again."""

def candidate_id(provider: str, model: str) -> str:
    """The key of a candidate's shared state: its provider URL and model, whatever route names it."""
    return stable_id(f"{provider}\n{model}")


def _ckey(cid: str, part: str) -> str:
    return f"{PREFIX}:cand:{cid}:{part}"


def spend_keys(scope: str) -> tuple[str, str]:
    """The spend hash (``spent``, ``calls``) and the held-reservations set of ``route:NAME`` or ``batch:ID``."""
    return f"{PREFIX}:spend:{scope}", f"{PREFIX}:spend:{scope}:held"


@dataclass(frozen=True)
class Limits:
    """What a candidate may do at once and per window, across the cluster (None: unlimited)."""

    max_concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    window: float = 60.0
    """Seconds ``rpm`` and ``tpm`` count over."""
    lease_ttl: float = 30.0
    """Seconds a concurrency slot outlives the process holding it."""


@dataclass(frozen=True)
class CooldownPolicy:
    """``allowed_fails`` transient failures within ``window`` seconds cool a candidate down for ``cooldown``."""

    allowed_fails: int = 3
    window: float = 60.0
    cooldown: float = 30.0


@dataclass(frozen=True)
class Lease:
    """A taken slot: who holds it, for which candidate, and the tokens it reserved against ``tpm``."""

    id: str
    cid: str
    est_tokens: int

    @property
    def name(self) -> str:
        """What the lease keeper (``keeper.py``) knows it by."""
        return f"slot {self.id} of candidate {self.cid}"


@dataclass(frozen=True)
class Denied:
    """Why a candidate cannot take a call now: ``cooldown``, ``concurrency``, ``rpm`` or ``tpm``."""

    reason: str
    wait: float
    """Seconds until it may free (for ``concurrency``: until the oldest lease would expire)."""


@dataclass(frozen=True)
class Refusal:
    """A budget that cannot hold an estimate: which scope, and what it has spent and holds."""

    scope: str
    spent: float
    held: float


class RoutingState:
    """The scripts, bound to one Redis client."""

    def __init__(self, redis_client: redis.Redis | None = None) -> None:
        self.redis = redis_client or state_redis()
        self._acquire = register(self.redis, "limits_acquire")
        self._release = register(self.redis, "limits_release", "spend")
        self._settle = register(self.redis, "limits_settle", "spend")
        self._renew = register(self.redis, "limits_renew")
        self._counts = register(self.redis, "limits_counts")
        self._reserve = register(self.redis, "limits_reserve")

    # -- slots --------------------------------------------------------------------------------------
    def acquire(self, cid: str, limits: Limits, est_tokens: int = 0) -> Lease | Denied:
        """Take a slot of ``cid`` unless it cools down or is at a limit; a taken slot is renewed until released."""
        lease = Lease(uuid.uuid4().hex, cid, max(int(est_tokens), 0))
        ttl = _ms(limits.lease_ttl)
        reply = self._acquire(
            keys=[_ckey(cid, "cool"), _ckey(cid, "inflight"), _ckey(cid, "rate"), _ckey(cid, "tokens")],
            args=[named(lease=lease.id, lease_ttl_ms=ttl, max_concurrency=limits.max_concurrency or 0,
                        rpm=limits.rpm or 0, window_ms=_ms(limits.window), tpm=limits.tpm or 0,
                        est_tokens=lease.est_tokens)],
        )
        if int(reply[0]) == 1:
            keeper.hold(lease.name, limits.lease_ttl, functools.partial(self.renew, lease, ttl))
            return lease
        return Denied(_text(reply[1]), max(int(reply[2]), 0) / 1000.0)

    def release(self, lease: Lease, limits: Limits, policy: CooldownPolicy, *, outcome: str, duration: float,
                tokens: int | None = None, usd: float | None = None, retry_after: float | None = None,
                error: str = "", spend: Sequence[tuple[str, int | None]] = (), reservation: str | None = None) -> float:
        """Give the slot back, record the call and settle its spend, in one script; returns the cooldown it
        started, in seconds (0: none).

        ``outcome`` is ``ok``, ``transient`` (counts towards a cooldown), ``permanent`` or ``skipped`` (no call
        was made). ``spend`` lists the scopes the call's ``usd`` is added to, each with an expiry in seconds;
        ``reservation`` is the budget hold it drops from them.
        """
        keeper.drop(lease.name)
        cid = lease.cid
        keys = [_ckey(cid, "inflight"), _ckey(cid, "free"), _ckey(cid, "latency"), _ckey(cid, "stats"),
                _ckey(cid, "fails"), _ckey(cid, "cool"), _ckey(cid, "tokens")]
        keys += [k for scope, _ in spend for k in spend_keys(scope)]
        cooled = self._release(keys=keys, args=[named(
            lease=lease.id, outcome=outcome, duration_ms=round(duration * 1000, 3),
            max_concurrency=limits.max_concurrency or 0, allowed_fails=policy.allowed_fails,
            cooldown_window_ms=_ms(policy.window), cooldown_ms=_ms(policy.cooldown), retry_after_ms=_ms(retry_after or 0),
            est_tokens=lease.est_tokens, actual_tokens=tokens if tokens is not None and limits.tpm else -1,
            usd=repr(float(usd or 0.0)), error=error[:300], reservation=reservation or "",
            expire=[expire or 0 for _, expire in spend], latency_samples=LATENCY_SAMPLES,
            latency_max_age=LATENCY_MAX_AGE, stats_minutes=STATS_MINUTES,
        )])
        return int(cooled) / 1000.0

    def renew(self, lease: Lease, ttl_ms: int) -> bool:
        """Extend a held slot; False when it had lapsed."""
        return bool(int(self._renew(keys=[_ckey(lease.cid, "inflight")], args=[named(lease=lease.id, lease_ttl_ms=ttl_ms)])))

    def wait_free(self, cids: Sequence[str], timeout: float) -> None:
        """Block until a slot of one of ``cids`` frees (a release pushed a token) or ``timeout`` passes."""
        if timeout <= 0:
            return
        self.redis.blpop([_ckey(c, "free") for c in cids], timeout=max(timeout, 0.01))

    def count_request(self, cid: str, rpm: int, window: float = 60.0) -> Denied | None:
        """Count one request against ``rpm`` per ``window`` for ``cid`` (an API tenant), or say how long until
        one more is allowed: the rate window of ``acquire``, with no concurrency slot held afterwards."""
        reply = self._acquire(
            keys=[_ckey(cid, "cool"), _ckey(cid, "inflight"), _ckey(cid, "rate"), _ckey(cid, "tokens")],
            args=[named(lease=uuid.uuid4().hex, lease_ttl_ms=1, max_concurrency=0, rpm=rpm, window_ms=_ms(window),
                        tpm=0, est_tokens=0)],
        )
        return None if int(reply[0]) == 1 else Denied(_text(reply[1]), max(int(reply[2]), 0) / 1000.0)

    def in_flight(self, cids: Sequence[str]) -> list[int]:
        """Calls in flight per candidate, cluster-wide (leases of dead processes that expired left out)."""
        return [int(n) for n in self._counts(keys=[_ckey(c, "inflight") for c in cids])]

    def latencies(self, cids: Sequence[str]) -> list[list[float]]:
        """Recent successful call durations (ms) per candidate, newest first, at most ``LATENCY_SAMPLES``."""
        with self.redis.pipeline(transaction=False) as pipe:
            for c in cids:
                pipe.lrange(_ckey(c, "latency"), 0, -1)
            rows = pipe.execute()
        return [[float(s.split(":", 1)[1]) for s in row] for row in rows]

    def next_turn(self, route: str) -> int:
        """A cluster-wide counter per route: round-robin turns."""
        return int(self.redis.incr(f"{PREFIX}:route:{route}:turn"))

    # -- spend and budgets ---------------------------------------------------------------------------
    def reserve(self, scopes: Sequence[tuple[str, float | None]], amount: float, hold: float) -> str | Refusal:
        """Hold ``amount`` USD against every scope's budget at once (None: tracked, no budget), or say which
        scope refuses. A hold of a process that died lapses after ``hold`` seconds."""
        reservation = uuid.uuid4().hex
        keys = [k for scope, _ in scopes for k in spend_keys(scope)]
        budgets = ["" if b is None else repr(float(b)) for _, b in scopes]
        reply = self._reserve(keys=keys, args=[named(reservation=reservation, amount=repr(float(amount)), hold_ms=_ms(hold),
                                                      budgets=budgets)])
        if int(reply[0]) == 0:
            return f"{reservation}:{float(amount)!r}"
        return Refusal(scopes[int(reply[0]) - 1][0], float(reply[1]), float(reply[2]))

    def settle(self, spend: Sequence[tuple[str, int | None]], reservation: str | None, usd: float | None) -> None:
        """Drop a hold and add what a call made without a slot really cost (None or 0 for a call that
        failed) to each scope, in one script (the same Lua as ``release``)."""
        self._settle(keys=[k for scope, _ in spend for k in spend_keys(scope)],
                     args=[named(usd=repr(float(usd or 0.0)), reservation=reservation or "",
                                 expire=[expire or 0 for _, expire in spend])])

    def spend(self, scope: str) -> tuple[float, float]:
        """USD spent through ``scope`` and held by its calls in flight."""
        total, held = spend_keys(scope)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(total, "spent")
            pipe.zrange(held, 0, -1)
            spent, holds = pipe.execute()
        return float(spent or 0.0), sum(float(h.rsplit(":", 1)[1]) for h in holds)

    # -- monitoring -----------------------------------------------------------------------------------
    def snapshot(self, cid: str, limits: Limits, policy: CooldownPolicy) -> dict[str, Any]:
        """A candidate's shared state for ``routes health``, read without changing it."""
        sec, usec = self.redis.time()
        now = int(sec) * 1000 + int(usec) // 1000
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.pttl(_ckey(cid, "cool"))
            pipe.zcount(_ckey(cid, "inflight"), now, "+inf")
            pipe.zcount(_ckey(cid, "rate"), now - _ms(limits.window), "+inf")
            pipe.zcount(_ckey(cid, "fails"), now - _ms(policy.window), "+inf")
            pipe.hgetall(_ckey(cid, "stats"))
            pipe.lrange(_ckey(cid, "latency"), 0, -1)
            cool, inflight, in_window, recent_fails, stats, samples = pipe.execute()
        minute = now // 60000
        recent = range(minute - STATS_MINUTES + 1, minute + 1)
        return {
            "now_ms": now,
            "cooldown_ms": max(int(cool), 0),
            "in_flight": int(inflight),
            "in_window": int(in_window),
            "recent_fails": int(recent_fails),
            "calls": sum(int(stats.get(f"c:{m}", 0)) for m in recent),
            "failures": sum(int(stats.get(f"f:{m}", 0)) for m in recent),
            "usd": float(stats.get("usd", 0.0)),
            "last_error": stats.get("last_error"),
            "last_error_at": int(stats["last_error_at"]) if stats.get("last_error_at") else None,
            "last_ok_at": int(stats["last_ok_at"]) if stats.get("last_ok_at") else None,
            "latencies": [float(s.split(":", 1)[1]) for s in samples],
        }

    def reset(self, cids: Iterable[str], scopes: Iterable[str] = ()) -> int:
        """Forget cooldowns, failures, statistics (and the spend of ``scopes``); leases in flight stay."""
        keys = [_ckey(c, p) for c in cids for p in ("cool", "fails", "stats", "latency", "rate", "tokens")]
        keys += [k for s in scopes for k in spend_keys(s)]
        return int(self.redis.delete(*keys)) if keys else 0


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


_state: RoutingState | None = None
_state_lock = threading.Lock()


def get_state() -> RoutingState:
    """The process-wide routing state (scripts registered once)."""
    global _state
    with _state_lock:
        if _state is None:
            _state = RoutingState()
        return _state
