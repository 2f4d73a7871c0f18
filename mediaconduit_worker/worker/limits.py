"""Shared state of route candidates, in Redis: cooldowns, concurrency leases, rate windows, latency and
call counts, spend and budgets.

Why Redis and Lua: every worker process on every machine must see the same cooldown and the same
count of calls in flight, and a check-then-change done in two round trips lets two workers both take
the last slot. Each check-and-change here is one Lua script (``register_script``), so it is atomic,
and every time is the Redis server's clock (``TIME``), so machines with skewed clocks agree.

A concurrency slot is a *lease* (a member of a sorted set scored by its expiry): the process holding
it renews it while the call runs (:class:`LeaseKeeper`), and a process that dies stops renewing, so
its slot frees itself within ``lease_ttl`` seconds. Freed slots push a token on a list that waiting
workers ``BLPOP``, so a waiter wakes as soon as a slot frees instead of polling.

State is kept per candidate, i.e. per provider URL + model (``candidate_id``): routes that share a
candidate share its cooldown, limits and latency, as they share the API behind it. One Redis (not a
Redis Cluster) is assumed, as Celery's Redis transport assumes it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ..settings import get_settings
from ..sources import stable_id

log = logging.getLogger(__name__)
PREFIX = "mediaconduit:routing"
STATS_MINUTES = 5
"""Health reports calls and failures over this many minutes."""
LATENCY_SAMPLES = 50
"""The latency strategy's p50 is over a candidate's last successful calls, at most this many..."""
LATENCY_MAX_AGE = 300
"""...and no older than this (seconds): a candidate unused that long is explored again."""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: cool, inflight, rate, tokens. ARGV: lease, lease_ttl_ms, max_concurrency, rpm, window_ms, tpm, est_tokens.
# Returns {1, now} with the slot taken, else {0, reason, ms until it may free}.
_ACQUIRE = _NOW + """
local cool = redis.call('PTTL', KEYS[1])
if cool > 0 then return {0, 'cooldown', cool} end
local lease, ttl = ARGV[1], tonumber(ARGV[2])
local maxc, rpm, window, tpm, est = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if maxc > 0 and redis.call('ZCARD', KEYS[2]) >= maxc then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {0, 'concurrency', tonumber(first[2]) - now}
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  if redis.call('ZCARD', KEYS[3]) >= rpm then
    local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {0, 'rpm', tonumber(first[2]) + window - now}
  end
end
if tpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
  local entries = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
  local used = 0
  for i = 1, #entries, 2 do used = used + tonumber(string.match(entries[i], ':(%d+)$')) end
  if #entries > 0 and used + est > tpm then
    return {0, 'tpm', tonumber(entries[2]) + window - now}
  end
end
redis.call('ZADD', KEYS[2], now + ttl, lease)
redis.call('PEXPIRE', KEYS[2], ttl)
if rpm > 0 then
  redis.call('ZADD', KEYS[3], now, lease)
  redis.call('PEXPIRE', KEYS[3], window)
end
if tpm > 0 then
  redis.call('ZADD', KEYS[4], now, lease .. ':' .. est)
  redis.call('PEXPIRE', KEYS[4], window)
end
return {1, now}
"""

# KEYS: inflight, free, latency, stats, fails, cool, tokens, then (spend hash, held set) per spend scope.
# ARGV: lease, outcome (ok|transient|permanent|skipped), duration_ms, max_concurrency, allowed_fails,
#       cooldown_window_ms, cooldown_ms, retry_after_ms, est_tokens, actual_tokens (-1: unknown), usd, error text,
#       budget reservation ('' none), then one expiry in seconds per spend scope (0: none).
# Returns the cooldown started, in ms (0: none).
_RELEASE = _NOW + """
local lease, outcome = ARGV[1], ARGV[2]
local maxc = tonumber(ARGV[4])
local usd = tonumber(ARGV[11])
redis.call('ZREM', KEYS[1], lease)
if maxc > 0 then
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, maxc - 1)
  redis.call('PEXPIRE', KEYS[2], 60000)
end
for i = 8, #KEYS, 2 do
  if ARGV[13] ~= '' then redis.call('ZREM', KEYS[i + 1], ARGV[13]) end
  if usd > 0 then
    redis.call('HINCRBYFLOAT', KEYS[i], 'spent', ARGV[11])
    redis.call('HINCRBY', KEYS[i], 'calls', 1)
    local expire = tonumber(ARGV[14 + (i - 8) / 2])
    if expire > 0 then redis.call('EXPIRE', KEYS[i], expire) end
  end
end
if outcome == 'skipped' then return 0 end
local minute = math.floor(now / 60000)
redis.call('HINCRBY', KEYS[4], 'c:' .. minute, 1)
if outcome ~= 'ok' then
  redis.call('HINCRBY', KEYS[4], 'f:' .. minute, 1)
  redis.call('HSET', KEYS[4], 'last_error', ARGV[12], 'last_error_at', now)
else
  redis.call('HSET', KEYS[4], 'last_ok_at', now)
  redis.call('LPUSH', KEYS[3], now .. ':' .. ARGV[3])
  redis.call('LTRIM', KEYS[3], 0, """ + str(LATENCY_SAMPLES - 1) + """)
  redis.call('EXPIRE', KEYS[3], """ + str(LATENCY_MAX_AGE) + """)
end
if usd > 0 then redis.call('HINCRBYFLOAT', KEYS[4], 'usd', ARGV[11]) end
for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
  local m = tonumber(string.match(field, '^[cf]:(%d+)$'))
  if m and m < minute - """ + str(STATS_MINUTES + 1) + """ then redis.call('HDEL', KEYS[4], field) end
end
local actual = tonumber(ARGV[10])
if actual >= 0 then
  local member = lease .. ':' .. ARGV[9]
  local score = redis.call('ZSCORE', KEYS[7], member)
  if score then
    redis.call('ZREM', KEYS[7], member)
    redis.call('ZADD', KEYS[7], score, lease .. ':' .. actual)
  end
end
if outcome == 'transient' then
  local window = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[5], now, lease)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - window)
  redis.call('PEXPIRE', KEYS[5], window)
  if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[5]) then
    local ms = math.max(tonumber(ARGV[7]), tonumber(ARGV[8]))
    if ms > 0 then
      redis.call('SET', KEYS[6], now + ms, 'PX', ms)
      redis.call('DEL', KEYS[5])
      return ms
    end
  end
end
return 0
"""

# KEYS: inflight. ARGV: lease, lease_ttl_ms. Returns 1 when renewed, 0 when the lease is gone.
_RENEW = _NOW + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# KEYS: inflight sets. Returns the live leases of each (expired ones dropped).
_COUNTS = _NOW + """
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  out[i] = redis.call('ZCARD', key)
end
return out
"""

# KEYS: (spend hash, held set) per scope. ARGV: reservation, amount, hold_ms, then one budget per scope ('' = none).
# Returns {0} when held everywhere, else {scope index, spent, held} of the first scope that refuses.
_RESERVE = _NOW + """
local amount = tonumber(ARGV[2])
local scopes = #KEYS / 2
for i = 1, scopes do
  local held_key = KEYS[2 * i]
  redis.call('ZREMRANGEBYSCORE', held_key, '-inf', now)
  local budget = ARGV[3 + i]
  if budget ~= '' then
    local held = 0
    for _, m in ipairs(redis.call('ZRANGE', held_key, 0, -1)) do held = held + tonumber(string.match(m, ':([^:]+)$')) end
    local spent = tonumber(redis.call('HGET', KEYS[2 * i - 1], 'spent') or '0')
    if spent + held + amount > tonumber(budget) + 1e-12 then
      return {i, tostring(spent), tostring(held)}
    end
  end
end
for i = 1, scopes do
  redis.call('ZADD', KEYS[2 * i], now + tonumber(ARGV[3]), ARGV[1] .. ':' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[2 * i], tonumber(ARGV[3]))
end
return {0}
"""

_client: redis.Redis | None = None
_client_lock = threading.Lock()


def client() -> redis.Redis:
    """This process's client of the Redis the result backend uses (redis-py reconnects after a fork)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(get_settings().effective_result_backend, decode_responses=True)
        return _client


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
        self.redis = redis_client or client()
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._release = self.redis.register_script(_RELEASE)
        self._renew = self.redis.register_script(_RENEW)
        self._counts = self.redis.register_script(_COUNTS)
        self._reserve = self.redis.register_script(_RESERVE)
        self.keeper = LeaseKeeper(self)

    # -- slots --------------------------------------------------------------------------------------
    def acquire(self, cid: str, limits: Limits, est_tokens: int = 0) -> Lease | Denied:
        """Take a slot of ``cid`` unless it cools down or is at a limit; a taken slot is renewed until released."""
        lease = Lease(uuid.uuid4().hex, cid, max(int(est_tokens), 0))
        reply = self._acquire(
            keys=[_ckey(cid, "cool"), _ckey(cid, "inflight"), _ckey(cid, "rate"), _ckey(cid, "tokens")],
            args=[lease.id, _ms(limits.lease_ttl), limits.max_concurrency or 0, limits.rpm or 0, _ms(limits.window),
                  limits.tpm or 0, lease.est_tokens],
        )
        if int(reply[0]) == 1:
            self.keeper.hold(lease, _ms(limits.lease_ttl))
            return lease
        return Denied(str(reply[1]), max(int(reply[2]), 0) / 1000.0)

    def release(self, lease: Lease, limits: Limits, policy: CooldownPolicy, *, outcome: str, duration: float,
                tokens: int | None = None, usd: float | None = None, retry_after: float | None = None,
                error: str = "", spend: Sequence[tuple[str, int | None]] = (), reservation: str | None = None) -> float:
        """Give the slot back, record the call and settle its spend, in one script; returns the cooldown it
        started, in seconds (0: none).

        ``outcome`` is ``ok``, ``transient`` (counts towards a cooldown), ``permanent`` or ``skipped`` (no call
        was made). ``spend`` lists the scopes the call's ``usd`` is added to, each with an expiry in seconds;
        ``reservation`` is the budget hold it drops from them.
        """
        self.keeper.drop(lease)
        cid = lease.cid
        keys = [_ckey(cid, "inflight"), _ckey(cid, "free"), _ckey(cid, "latency"), _ckey(cid, "stats"),
                _ckey(cid, "fails"), _ckey(cid, "cool"), _ckey(cid, "tokens")]
        keys += [k for scope, _ in spend for k in spend_keys(scope)]
        cooled = self._release(
            keys=keys,
            args=[lease.id, outcome, round(duration * 1000, 3), limits.max_concurrency or 0, policy.allowed_fails,
                  _ms(policy.window), _ms(policy.cooldown), _ms(retry_after or 0), lease.est_tokens,
                  tokens if tokens is not None and limits.tpm else -1, repr(float(usd or 0.0)), error[:300],
                  reservation or "", *[expire or 0 for _, expire in spend]],
        )
        return int(cooled) / 1000.0

    def renew(self, lease: Lease, ttl_ms: int) -> bool:
        return bool(int(self._renew(keys=[_ckey(lease.cid, "inflight")], args=[lease.id, ttl_ms])))

    def wait_free(self, cids: Sequence[str], timeout: float) -> None:
        """Block until a slot of one of ``cids`` frees (a release pushed a token) or ``timeout`` passes."""
        if timeout <= 0:
            return
        self.redis.blpop([_ckey(c, "free") for c in cids], timeout=max(timeout, 0.01))

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
        reply = self._reserve(keys=keys, args=[reservation, repr(float(amount)), _ms(hold), *budgets])
        if int(reply[0]) == 0:
            return f"{reservation}:{float(amount)!r}"
        return Refusal(scopes[int(reply[0]) - 1][0], float(reply[1]), float(reply[2]))

    def settle(self, spend: Sequence[tuple[str, int | None]], reservation: str | None, usd: float | None) -> None:
        """Drop a hold and add what the call really cost (None or 0 for a call that failed) to each scope."""
        with self.redis.pipeline(transaction=False) as pipe:
            for scope, expire in spend:
                total, held = spend_keys(scope)
                if reservation:
                    pipe.zrem(held, reservation)
                if usd:
                    pipe.hincrbyfloat(total, "spent", usd)
                    pipe.hincrby(total, "calls", 1)
                    if expire:
                        pipe.expire(total, expire)
            pipe.execute()

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


class LeaseKeeper:
    """Renews the leases this process holds, each a third of its time to live after the last renewal,
    from one daemon thread (started on first use, and again in a forked child)."""

    def __init__(self, state: RoutingState) -> None:
        self.state = state
        self._held: dict[str, tuple[Lease, int, float]] = {}  # lease id -> (lease, ttl ms, renew at)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._next = 0.0  # when the thread wakes next (monotonic)
        self._pid = 0

    def hold(self, lease: Lease, ttl_ms: int) -> None:
        due = time.monotonic() + ttl_ms / 3000.0
        with self._lock:
            self._held[lease.id] = (lease, ttl_ms, due)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="mediaconduit-leases", daemon=True).start()
            earlier = due < self._next
        if earlier:
            self._wake.set()

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease.id, None)

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [(lease, ttl) for lease, ttl, at in self._held.values() if at <= now]
            for lease, ttl in due:
                try:
                    renewed = self.state.renew(lease, ttl)
                except redis.RedisError as exc:
                    log.warning("renewing lease %s of candidate %s failed: %s", lease.id, lease.cid, exc)
                    renewed = True  # try again next round; the lease may still hold
                with self._lock:
                    if lease.id not in self._held:
                        continue
                    if renewed:
                        self._held[lease.id] = (lease, ttl, time.monotonic() + ttl / 3000.0)
                    else:
                        log.warning("lease %s of candidate %s expired before it was renewed", lease.id, lease.cid)
                        del self._held[lease.id]
            with self._lock:
                # Sleep until the next renewal is due, or 5 s; hold() wakes the thread only for an earlier one,
                # so a job does not pay for a thread switch.
                self._next = min(min((at for _, _, at in self._held.values()), default=float("inf")),
                                 time.monotonic() + 5.0)
                wait = self._next - time.monotonic()
            self._wake.wait(max(wait, 0.0))
            self._wake.clear()


_state: RoutingState | None = None
_state_lock = threading.Lock()


def get_state() -> RoutingState:
    """The process-wide routing state (scripts registered once)."""
    global _state
    with _state_lock:
        if _state is None:
            _state = RoutingState()
        return _state
