"""The webhook dispatcher: sends the outbox's events (``worker/events.py`` puts them there) to their jobs'
webhooks, signed, retried until the receiver takes them, and losing none when a dispatcher dies.

Every gateway process runs one (a thread with its own event loop, started with the app); so does
``mediaconduit webhooks``. They share the work through one consumer group of the outbox stream:

- ``XREADGROUP`` hands each new entry to one dispatcher, which makes the first attempt at once;
- an entry is ``XACK``-ed and deleted only once its fate is written: sent (a 2xx), handed to the retry set,
  or recorded as failed for good; a dispatcher that dies before that leaves it pending, and another takes it
  over with ``XAUTOCLAIM`` once it has been idle longer than an attempt can take;
- retries are in Redis: the hash ``mediaconduit:webhooks:delivery:<webhook id>`` (url, tenant, job, event,
  body, attempts, first attempt) and the sorted set ``mediaconduit:webhooks:retries`` of webhook ids by due
  time. ``lua/webhooks_due.lua`` leases each due id to one dispatcher; a lease that runs out (its dispatcher
  died) makes it due again.

A delivery is a JSON POST, the job as ``GET /v1/jobs/{id}`` shows it when the event is first taken (as
Replicate's webhooks send the prediction), with the event: ``{"type", "timestamp", "data": <job>, "event":
{"id", "task_id", "data"}}``. Its ``webhook-id`` is made of the step's task id and the event's id in the
step's stream: the same on every attempt, so a receiver de-duplicates on it. ``webhook-timestamp`` is the
attempt's, and the signature (``webhooks.signature``) is made with the tenant's secret at each attempt, so
a rotated secret signs the retries too.

A 5xx, 408 or 429 answer, a timeout or a connection error is retried after ``MEDIACONDUIT_WEBHOOK_RETRY_BASE``
seconds, doubled at each attempt with jitter (at least a ``Retry-After``), at most ``MAX_DELAY``; ``start``,
``output`` and ``logs`` until ``MEDIACONDUIT_WEBHOOK_RETRY_HORIZON`` after their first attempt, ``completed``
as long as results are kept. Any other answer, an address refused at send time, or the horizon passed is a
failure for good, recorded for the tenant (``webhooks.record_failure``). A job sends one ``start`` and one
``completed``: a chain's steps each have theirs, and the first of the job is sent (a step that succeeded
before the last is not the job's completion).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import redis

from ..fetch import URLRefused
from ..http import parse_retry_after
from ..redaction import redact_url
from ..settings import Settings
from ..worker.events import OUTBOX, WEBHOOK_PREFIX
from .records import JobRecord, job_view
from .tenants import KeyStore, Redis, TenantError
from .webhooks import address_refused, check_url, named_addresses, prefixes, record_failure, signature

log = logging.getLogger(__name__)
GROUP = "mediaconduit-webhooks"
RETRIES = "mediaconduit:webhooks:retries"
DELIVERY_PREFIX = "mediaconduit:webhooks:delivery:"
ONCE_PREFIX = "mediaconduit:webhooks:once:"
"""``<job>:<start|completed>``: the webhook id of the job's one ``start`` or ``completed``."""
MAX_DELAY = 900.0
"""Longest wait between two attempts, in seconds."""
IN_FLIGHT = 64
"""Deliveries one dispatcher has under way at once."""
READ_BLOCK_MS = 500
"""How long one read of the outbox waits for new entries (due retries wait at most this much longer)."""
ANSWER_MAX = 64 * 1024
"""Bytes of a receiver's answer read (the rest is not wanted)."""
ONCE_PER_JOB = frozenset({"start", "completed"})


@dataclass
class Delivery:
    """One event for one webhook, as the retry set keeps it."""

    webhook_id: str
    url: str
    tenant: str
    job: str
    event: str
    body: str
    first: float
    attempts: int = 0

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Delivery:
        return cls(data["webhook_id"], data["url"], data["tenant"], data["job"], data["event"], data["body"],
                   float(data["first"]), int(data["attempts"]))


@dataclass
class Outcome:
    """What one attempt came to: ``sent``, ``retry`` (after at least ``wait`` s) or ``failed``, and why."""

    kind: str
    detail: str
    status: int | None = None
    wait: float | None = None


class Dispatcher:
    """One consumer of the outbox; ``run(stop)`` until ``stop`` is set, then the attempts under way finish."""

    def __init__(self, settings: Settings, client: Redis, name: str | None = None) -> None:
        self.settings, self.redis = settings, client
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.keys = KeyStore(client)
        self.tasks: set[asyncio.Task[None]] = set()
        self.claim_cursor = "0-0"
        self.skew = 0.0
        self.sent = 0
        """Deliveries answered 2xx by this dispatcher (for benchmarks and logs)."""
        from ..worker.lua_scripts import register

        self._due = register(client, "webhooks_due")

    # -- the loop -----------------------------------------------------------------------------------------
    async def run(self, stop: threading.Event) -> None:
        self._join_group()
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False, limits=limits) as self.http:
            next_claim = next_clock = 0.0
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_clock:
                        seconds, micros = self.redis.time()
                        self.skew = seconds + micros / 1e6 - time.time()
                        next_clock = time.monotonic() + 60
                    if time.monotonic() >= next_claim:
                        self._claim_abandoned()
                        next_claim = time.monotonic() + max(1.0, self._idle_ms() / 4000)
                    self._take_due()
                    await self._read_new()
                    await self._wait_for_room()
                except redis.RedisError as exc:  # Redis away for a moment: nothing is lost, it is all in Redis
                    log.warning("webhook dispatcher %s: %s", self.name, exc)
                    await asyncio.sleep(1)
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=self.settings.webhook_timeout + 5)
        self._leave_group()

    def _join_group(self) -> None:
        try:
            self.redis.xgroup_create(OUTBOX, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _leave_group(self) -> None:
        """A dispatcher that stops cleanly holds nothing: its name leaves the group."""
        try:
            pending = self.redis.xpending_range(OUTBOX, GROUP, "-", "+", 1, consumername=self.name)
            if not pending:
                self.redis.xgroup_delconsumer(OUTBOX, GROUP, self.name)
        except redis.RedisError as exc:
            log.warning("webhook dispatcher %s: not removed from its group (%s)", self.name, exc)

    def _room(self) -> int:
        return IN_FLIGHT - len(self.tasks)

    def _idle_ms(self) -> int:
        """How long an entry must be pending before it is taken for abandoned: longer than any attempt."""
        return int((2 * self.settings.webhook_timeout + 5) * 1000)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery failed in the dispatcher", exc_info=task.exception())

    def _claim_abandoned(self) -> None:
        """Entries a dead dispatcher held (pending past ``_idle_ms``), taken over."""
        if self._room() <= 0:
            return
        reply = self.redis.xautoclaim(OUTBOX, GROUP, self.name, self._idle_ms(), self.claim_cursor, count=self._room())
        self.claim_cursor = reply[0]
        for entry_id, fields in reply[1]:
            if fields:
                self._spawn(self._from_outbox(entry_id, fields))

    def _take_due(self) -> None:
        if self._room() <= 0:
            return
        lease = int((2 * self.settings.webhook_timeout + 5) * 1000)
        for webhook_id in self._due(keys=[RETRIES], args=[json.dumps({"lease": lease, "count": self._room()})]):
            self._spawn(self._retry(webhook_id))

    async def _read_new(self) -> None:
        room = self._room()
        if room <= 0:
            return
        reply = await asyncio.to_thread(self.redis.xreadgroup, GROUP, self.name, {OUTBOX: ">"}, count=room,
                                        block=READ_BLOCK_MS)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self._spawn(self._from_outbox(entry_id, fields))

    async def _wait_for_room(self) -> None:
        if self._room() <= 0:
            await asyncio.wait(self.tasks, timeout=1, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(0)

    # -- one event ----------------------------------------------------------------------------------------
    async def _from_outbox(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            delivery = await asyncio.to_thread(self._delivery_of, fields)
        except redis.RedisError:
            raise  # left pending: taken again once Redis answers
        except Exception:  # an entry no attempt can be made of would otherwise come back forever
            log.exception("webhook outbox entry %s (task %s) cannot be sent; dropped", entry_id, fields.get("task_id"))
            delivery = None
        if delivery is None:
            self._finish_entry(entry_id)
            return
        outcome = await self._attempt(delivery)
        self._settle(delivery, outcome, entry_id=entry_id)

    async def _retry(self, webhook_id: str) -> None:
        data = self.redis.hgetall(DELIVERY_PREFIX + webhook_id)
        if not data:
            self.redis.zrem(RETRIES, webhook_id)
            return
        delivery = Delivery.from_hash(data)
        outcome = await self._attempt(delivery)
        self._settle(delivery, outcome)

    def _delivery_of(self, fields: dict[str, str]) -> Delivery | None:
        """The delivery an outbox entry makes, or None when it is not to be sent (its webhook or job gone, a
        job's second ``start``, a chain step's own completion)."""
        task_id, event, event_id = fields["task_id"], fields["event"], fields["event_id"]
        hook = self.redis.hgetall(WEBHOOK_PREFIX + task_id)
        record = JobRecord.load(self.redis, hook.get("job") or task_id) if hook else None
        if record is None:
            log.warning("webhook event %s of task %s not sent: its webhook or job is gone", event_id, task_id)
            return None
        data = json.loads(fields.get("data") or "{}")
        if event == "completed" and data.get("status") == "succeeded" and task_id != record.steps[-1]:
            return None
        webhook_id = f"whk_{task_id}_{event_id}"
        if event in ONCE_PER_JOB:
            once = f"{ONCE_PREFIX}{record.id}:{event}"
            if not self.redis.set(once, webhook_id, nx=True, ex=self.settings.result_expires) \
                    and self.redis.get(once) != webhook_id:  # taken before: sent, or being sent, by its first
                return None
        from ..worker.app import app

        metas = [app.backend.get_task_meta(step) for step in record.steps]
        job = job_view(record, metas, hook.get("base") or "/")
        body = {"type": event, "timestamp": datetime.now(UTC).isoformat(), "data": job,
                "event": {"id": event_id, "task_id": task_id, "data": data}}
        return Delivery(webhook_id, hook["url"], record.tenant, record.id, event,
                        json.dumps(body, separators=(",", ":"), default=str), time.time())

    async def _attempt(self, delivery: Delivery) -> Outcome:
        delivery.attempts += 1
        try:
            host, port = check_url(delivery.url, self.settings, resolve=False)
        except URLRefused as exc:
            return Outcome("failed", f"refused: {exc}")
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                           self.settings.webhook_timeout)
        except (OSError, TimeoutError) as exc:
            return Outcome("retry", f"cannot resolve {host!r}: {exc or type(exc).__name__}")
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        named = named_addresses(prefixes(self.settings))
        for address in addresses:
            reason = address_refused(address, port, named)
            if reason:
                return Outcome("failed", f"refused: {host} resolves to {address} ({reason}), which no "
                                         "MEDIACONDUIT_WEBHOOK_ALLOW prefix names")
        try:
            secret = self.keys.webhook_secret(delivery.tenant)
        except TenantError as exc:
            return Outcome("failed", str(exc))
        body = delivery.body.encode()
        stamp = int(time.time())
        url = httpx.URL(delivery.url)
        headers = {"content-type": "application/json", "user-agent": "mediaconduit-webhooks",
                   "host": url.netloc.decode("ascii"), "webhook-id": delivery.webhook_id,
                   "webhook-timestamp": str(stamp), "webhook-signature": signature(secret, delivery.webhook_id, stamp, body)}
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        try:
            async with self.http.stream("POST", url.copy_with(host=addresses[0]), content=body, headers=headers,
                                        extensions=extensions, timeout=self.settings.webhook_timeout) as answer:
                read = 0
                async for chunk in answer.aiter_raw():
                    read += len(chunk)
                    if read > ANSWER_MAX:
                        break
        except httpx.TimeoutException:
            return Outcome("retry", f"no answer within {self.settings.webhook_timeout:g}s (MEDIACONDUIT_WEBHOOK_TIMEOUT)")
        except httpx.HTTPError as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc}")
        code = answer.status_code
        if 200 <= code < 300:
            return Outcome("sent", f"HTTP {code}", code)
        if code >= 500 or code in (408, 429):
            return Outcome("retry", f"HTTP {code}", code, parse_retry_after(answer.headers))
        return Outcome("failed", f"HTTP {code}", code)

    def _deadline(self, delivery: Delivery) -> float:
        horizon = self.settings.result_expires if delivery.event == "completed" else self.settings.webhook_retry_horizon
        return delivery.first + horizon

    def _delay(self, attempts: int, wait: float | None) -> float:
        base = min(MAX_DELAY, self.settings.webhook_retry_base * 2 ** (attempts - 1))
        return max(base * random.uniform(0.5, 1.0), min(wait or 0.0, MAX_DELAY))

    def _settle(self, delivery: Delivery, outcome: Outcome, entry_id: str | None = None) -> None:
        """Write what the attempt came to, and only then let go of the outbox entry (when it came from there)."""
        if outcome.kind == "retry":
            delay = self._delay(delivery.attempts, outcome.wait)
            if time.time() + delay > self._deadline(delivery):
                outcome = Outcome("failed", f"still failing after {delivery.attempts} attempts over "
                                            f"{time.time() - delivery.first:.0f}s: {outcome.detail}", outcome.status)
        key = DELIVERY_PREFIX + delivery.webhook_id
        with self.redis.pipeline() as pipe:
            if outcome.kind == "sent":
                self.sent += 1
                pipe.delete(key)
                pipe.zrem(RETRIES, delivery.webhook_id)
            elif outcome.kind == "retry":
                due_ms = int((time.time() + self.skew + delay) * 1000)
                pipe.hset(key, mapping={k: str(v) for k, v in asdict(delivery).items()})
                pipe.hset(key, "last_error", outcome.detail)
                pipe.expire(key, int(self._deadline(delivery) - time.time()) + 3600)
                pipe.zadd(RETRIES, {delivery.webhook_id: due_ms})
            else:
                pipe.delete(key)
                pipe.zrem(RETRIES, delivery.webhook_id)
                failure = {"webhook_id": delivery.webhook_id, "job_id": delivery.job, "event": delivery.event,
                           "url": redact_url(delivery.url), "status": outcome.status, "error": outcome.detail,
                           "attempts": delivery.attempts, "at": datetime.now(UTC).isoformat()}
                record_failure(pipe, delivery.tenant, failure, self.settings.result_expires)
            if entry_id is not None:
                pipe.xack(OUTBOX, GROUP, entry_id)
                pipe.xdel(OUTBOX, entry_id)
            pipe.execute()
        if outcome.kind == "failed":
            log.warning("webhook %s (job %s, %s) to %s failed for good: %s", delivery.webhook_id, delivery.job,
                        delivery.event, redact_url(delivery.url), outcome.detail)

    def _finish_entry(self, entry_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.xack(OUTBOX, GROUP, entry_id)
            pipe.xdel(OUTBOX, entry_id)
            pipe.execute()


def run_in_thread(settings: Settings, client: Redis) -> tuple[threading.Thread, threading.Event]:
    """A dispatcher on a thread of its own (its own event loop, so no request waits on it); set the event to stop."""
    stop = threading.Event()
    dispatcher = Dispatcher(settings, client)
    thread = threading.Thread(target=lambda: asyncio.run(dispatcher.run(stop)), name="webhook-dispatcher", daemon=True)
    thread.start()
    return thread, stop
