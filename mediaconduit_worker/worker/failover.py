"""Serving a ``route:NAME`` job: order the route's candidates by its strategy, then try them in turn within
this one delivery.

A candidate that fails transiently (429, 5xx, timeout, unreachable, a service that will not start) hands
the job to the next one at once: no re-queue, no backoff sleep, and HTTP clients do not retry inline
(``http.fail_fast``). A candidate that cools down or is at a limit is skipped; when nothing else served,
the job waits for a slot of those at their limit (``max_wait``). Permanent errors (bad input, HTTP
400/401/404, an unknown model) end the job at once: another candidate would refuse it too. When no
candidate could serve, ``RouteUnavailableError`` (a ``TransientError``) sends the job back to the
queue with backoff, as a direct job's transient error does. Every attempt is recorded in the result.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..deadline import time_left
from ..errors import BudgetExceededError, BudgetHeldError, RouteUnavailableError, ServiceError
from ..http import fail_fast
from ..pricing import job_size
from ..redaction import redact_text
from ..settings import get_settings
from . import tracing
from .calls import BUDGET_RECHECK, Meter, Served, batch_scope, execute, hold_budget, prepare
from .limits import Denied, Lease, RoutingState, get_state
from .reliability import TRANSIENT_EXCEPTIONS
from .routes import Candidate, Route

if TYPE_CHECKING:
    from .chunks import ChunkWriter

log = logging.getLogger(__name__)

FAILOVER_EXCEPTIONS: tuple[type[Exception], ...] = (*TRANSIENT_EXCEPTIONS, ServiceError)
"""What moves a job to the next candidate: the transient kinds, and a service that will not start."""
WAIT_SLICE = 1.0
"""Longest single wait for a slot, so leases of dead workers (which push no token) are noticed."""
MESSAGE_CHARS = 500
"""An attempt's message is cut here: results carry one per candidate tried."""


# -- strategies ----------------------------------------------------------------------------------------
def order(route: Route, state: RoutingState, model_input: Any, opts: dict[str, Any]) -> list[Candidate]:
    """The route's candidates in the order this job tries them."""
    cands = list(route.candidates)
    strategy = route.spec.strategy
    if strategy == "weighted":
        if len({c.spec.weight for c in cands}) == 1:
            turn = state.next_turn(route.name) % len(cands)
            return cands[turn:] + cands[:turn]
        # Efraimidis-Spirakis: a random order in which each candidate leads with probability weight / total.
        return sorted(cands, key=lambda c: random.random() ** (1.0 / c.spec.weight), reverse=True)
    if strategy == "least-busy":
        busy = state.in_flight([c.cid for c in cands])
        ties = {c.index: random.random() for c in cands}
        return sorted(cands, key=lambda c: (busy[c.index - 1], ties[c.index]))
    if strategy == "latency":
        p50 = [statistics.median(s) if s else 0.0 for s in state.latencies([c.cid for c in cands])]
        best = min(p50)
        near = [c for c in cands if p50[c.index - 1] <= best * (1 + route.spec.latency_buffer)]
        random.shuffle(near)
        rest = sorted((c for c in cands if c not in near), key=lambda c: p50[c.index - 1])
        return near + rest
    if strategy == "cost":
        costs = {c.index: estimate(c, model_input, opts) for c in cands}
        return sorted(cands, key=lambda c: costs[c.index])  # stable: ties keep the file's order
    return cands


def estimate(cand: Candidate, model_input: Any, opts: dict[str, Any]) -> float:
    """A candidate's estimated USD for this input (infinite when it cannot be priced or loaded)."""
    try:
        with fail_fast():
            loaded, runnable = prepare(cand.provider, cand.model)
        value = Meter(loaded, runnable, model_input, opts, pricing=cand.spec.pricing).estimate
    except Exception as exc:  # a candidate that cannot load now is tried last; its attempt says why
        log.info("route cost: %s cannot be priced now: %s", cand.label, exc)
        return float("inf")
    return float("inf") if value is None else value


# -- attempts --------------------------------------------------------------------------------------------
@dataclass
class Attempt:
    """One candidate's turn: served, failed (with the error class and HTTP status), or skipped (and why)."""

    candidate: Candidate
    duration: float = 0.0
    error: str | None = None
    status: int | None = None
    skipped: str | None = None
    message: str | None = None
    waited: float = 0.0

    def failed(self, exc: BaseException) -> None:
        """Record the error's class, HTTP status and message (secrets redacted, cut to a few lines)."""
        self.error, self.status = type(exc).__name__, getattr(exc, "status", None)
        self.message = redact_text(str(exc))[:MESSAGE_CHARS]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"candidate": self.candidate.index, "provider": self.candidate.provider,
                               "model": self.candidate.model, "error": self.error, "status": self.status,
                               "duration_ms": round(self.duration * 1000, 3)}
        if self.skipped:
            out["skipped"] = self.skipped
        if self.message:
            out["message"] = self.message
        if self.waited:
            out["waited_ms"] = round(self.waited * 1000, 3)
        return out

    def __str__(self) -> str:
        if self.skipped:
            return self.message or f"{self.candidate.label}: skipped ({self.skipped})"
        status = f" HTTP {self.status}" if self.status else ""
        return f"{self.candidate.label}: {self.error}{status}: {self.message}"


class _Skip(Exception):
    """A candidate passed over without a call (its budget share, its pricing)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _annotate(exc: BaseException, context: str) -> None:
    """Prefix an exception's message with where in the route it happened (its class is kept)."""
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{context}: {exc.args[0]}", *exc.args[1:])


# -- serving ------------------------------------------------------------------------------------------------
class RouteRun:
    """One delivery of a routed job."""

    def __init__(self, route: Route, model_input: Any, opts: dict[str, Any], batch: Any = None,
                 chunks: ChunkWriter | None = None) -> None:
        self.route = route
        self.chunks = chunks
        self.input = model_input
        self.opts = opts
        self.state = get_state()
        self.size = job_size(model_input, opts)
        batch_budget = batch_scope(batch)
        self.scopes: list[tuple[str, float | None]] = [(route.scope, route.spec.budget_usd)]
        self.spend: list[tuple[str, int | None]] = [(route.scope, None)]
        if batch_budget is not None:
            self.scopes.append(batch_budget)
            self.spend.append((batch_budget[0], get_settings().result_expires))
        self.attempts: list[Attempt] = []

    def serve(self) -> Served:
        limited: dict[int, tuple[Candidate, Denied]] = {}
        cooling: list[float] = []
        for cand in order(self.route, self.state, self.input, self.opts):
            served = self.try_candidate(cand, limited, cooling)
            if served is not None:
                return served
        # Wait at most max_wait, and never past the job's own deadline (its soft time limit).
        since = time.monotonic()
        deadline = since + min(self.route.spec.max_wait, time_left(default=self.route.spec.max_wait) or 0.0)
        while limited and time.monotonic() < deadline:
            served = self.wait_for(limited, cooling, since, deadline)
            if served is not None:
                return served
        return self.give_up(limited, cooling)

    def try_candidate(self, cand: Candidate, limited: dict[int, tuple[Candidate, Denied]],
                      cooling: list[float], waited: float = 0.0) -> Served | None:
        got = self.state.acquire(cand.cid, cand.limits, self.size.tokens)
        if isinstance(got, Denied):
            if got.reason == "cooldown":
                cooling.append(got.wait)
            else:
                limited[cand.index] = (cand, got)
            if not any(a.candidate is cand and a.skipped for a in self.attempts):
                self.attempts.append(Attempt(cand, skipped=got.reason))
            return None
        limited.pop(cand.index, None)
        return self.call(cand, got, waited)

    def call(self, cand: Candidate, lease: Lease, waited: float) -> Served | None:
        with tracing.attempt(cand.index, cand.provider, cand.model) as span:
            served = self._call(cand, lease, waited)
            if span is not None:
                span.set_attribute("mediaconduit.outcome", "served" if served else
                                   self.attempts[-1].skipped or self.attempts[-1].error or "failed")
            return served

    def _call(self, cand: Candidate, lease: Lease, waited: float) -> Served | None:
        attempt = Attempt(cand, waited=waited)
        self.attempts.append(attempt)
        started = time.perf_counter()
        outcome, usd, tokens, retry_after, reservation = "permanent", None, None, None, None
        try:
            with fail_fast():
                loaded, runnable = prepare(cand.provider, cand.model)
                meter = Meter(loaded, runnable, self.input, self.opts, pricing=cand.spec.pricing, size=self.size)
                reservation = self.reserve(cand, meter)
                output = execute(loaded, runnable, self.input, self.opts, route=self.route.name, chunks=self.chunks)
            usd = meter.finish(output)
            tokens = meter.tokens(output)
            outcome = "ok"
        except _Skip as skip:
            outcome = "skipped"
            attempt.skipped, attempt.message = skip.reason, str(skip)
            return None
        except FAILOVER_EXCEPTIONS as exc:
            outcome = "transient"
            retry_after = getattr(exc, "retry_after", None)
            attempt.failed(exc)
            log.info("route %s: %s failed (%s); trying the next candidate", self.route.name, cand.label, exc)
            return None
        except Exception as exc:
            attempt.failed(exc)
            earlier = "; ".join(str(a) for a in self.attempts[:-1])
            _annotate(exc, f"route {self.route.name!r}, {cand.label}" + (f" (after {earlier})" if earlier else ""))
            raise
        finally:
            attempt.duration = time.perf_counter() - started
            cooled = self.state.release(
                lease, cand.limits, self.route.policy, outcome=outcome, duration=attempt.duration, tokens=tokens,
                usd=usd, retry_after=retry_after, error=f"{attempt.error or ''} {attempt.message or ''}".strip(),
                spend=self.spend, reservation=reservation,
            )
            if cooled:
                log.warning("route %s: %s cools down for %.1fs, for every worker (last error: %s)",
                            self.route.name, cand.label, cooled, attempt.message)
        return Served(loaded, runnable, output, cand.provider, cand.model, started, route=self.route.name,
                      candidate=cand.describe(), attempts=[a.as_json() for a in self.attempts])

    def reserve(self, cand: Candidate, meter: Meter) -> str | None:
        """Hold the estimate against the route's and the batch's budgets; a candidate that does not fit is
        skipped (a cheaper one may)."""
        try:
            return hold_budget(self.state, self.scopes, meter.estimate, cand.label)
        except BudgetExceededError as exc:
            raise _Skip("budget", str(exc)) from None
        except BudgetHeldError as exc:
            raise _Skip("budget held", str(exc)) from None

    def wait_for(self, limited: dict[int, tuple[Candidate, Denied]], cooling: list[float], since: float,
                 deadline: float) -> Served | None:
        """Wait until a slot of a candidate at its limit may have freed, then try those again in order."""
        waits = [d.wait for _, d in limited.values()]
        pause = max(min(min(waits), WAIT_SLICE, deadline - time.monotonic()), 0.001)
        slots = [c.cid for c, d in limited.values() if d.reason == "concurrency"]
        if slots:
            self.state.wait_free(slots, pause)
        else:
            time.sleep(pause)
        for cand, _ in sorted(limited.values(), key=lambda item: item[0].index):
            served = self.try_candidate(cand, limited, cooling, waited=time.monotonic() - since)
            if served is not None:
                return served
        return None

    def give_up(self, limited: dict[int, tuple[Candidate, Denied]], cooling: list[float]) -> Served:
        tried = "; ".join(str(a) for a in self.attempts)
        attempts = [a.as_json() for a in self.attempts]
        if self.attempts and all(a.skipped == "budget" for a in self.attempts):
            raise BudgetExceededError(f"route {self.route.name!r}: no candidate fits the budget: {tried}")
        waits = cooling + [d.wait for _, d in limited.values()]
        waits += [BUDGET_RECHECK for a in self.attempts if a.skipped == "budget held"]
        raise RouteUnavailableError(f"route {self.route.name!r}: no candidate could serve this delivery: {tried}",
                                    retry_after=min(waits) if waits else None, attempts=attempts)
