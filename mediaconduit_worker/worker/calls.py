"""One call of one provider's model, as a job makes it: load the provider, run the model, price the call.

Shared by direct jobs and by each candidate a route tries (``failover.py``): both get the same errors
(provider code that raises is a ``ProviderExecutionError`` naming provider and model), the same cost
record (``cost.estimated_usd`` before the call, ``cost.usd`` after it) and the same budgets.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..assets import Asset
from ..capabilities import MediaCapability
from ..errors import BudgetExceededError, BudgetHeldError, MediaConduitError, ProviderExecutionError, StreamBrokenError
from ..manifest import refuse_bad_options
from ..models import Model, run_stream
from ..pricing import Size, actual_usd, cost_record, estimate_usd, is_priced, job_size
from ..provider import DockerProvider, ProviderType
from ..settings import get_settings
from .limits import Refusal, RoutingState, get_state
from .loader import LoadedProvider, get_registry
from .reliability import TRANSIENT_EXCEPTIONS

if TYPE_CHECKING:
    from .chunks import ChunkWriter

PASS_THROUGH: tuple[type[Exception], ...] = (MediaConduitError, *TRANSIENT_EXCEPTIONS)
"""Errors that keep their own class: ours, and the transient kinds the task retries."""


@dataclass
class Served:
    """What a job's call produced, and how: the provider and model that served, and for a route its
    name, the serving candidate and every attempt."""

    loaded: LoadedProvider
    runnable: Model
    output: Asset
    provider_url: str
    model: str
    started: float
    """When the serving call began (``time.perf_counter()``): a prompt the worker makes is timed from it."""
    route: str | None = None
    candidate: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)


def capability_of(loaded: LoadedProvider, runnable: Model) -> MediaCapability | None:
    """What a model does: its class's capability, else its manifest entry's."""
    return runnable.capability or loaded.manifest.capability_of(runnable.id)


def prepare(provider_url: str, model: str) -> tuple[LoadedProvider, Model]:
    """The loaded provider and its runnable model, its Docker service started (transient errors pass through)."""
    loaded = get_registry().get(provider_url)
    try:
        runnable = loaded.provider.get_model(model)  # may discover models over HTTP: transient errors retry
        if isinstance(loaded.provider, DockerProvider):
            loaded.provider.ensure_service()
    except PASS_THROUGH:
        raise
    except Exception as exc:
        raise ProviderExecutionError(
            f"provider {loaded.manifest.id!r} model {model!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    return loaded, runnable


CallObserver = Callable[[LoadedProvider, Model, str | None, float, BaseException | None], None]
CALL_OBSERVERS: list[CallObserver] = []
"""Told of every provider call: provider, model, route (None: a direct job), seconds, the error it raised.
Empty unless the worker records metrics (``metrics.hooks.install``); empty, it costs a call one check."""


def execute(loaded: LoadedProvider, runnable: Model, model_input: Any, opts: dict[str, Any],
            route: str | None = None, chunks: ChunkWriter | None = None) -> Asset:
    """The model's output asset; provider code that raises anything but our errors is named. Options of a
    type the manifest's ``parameters`` do not declare are refused first. ``route``: the route it serves.
    ``chunks``: the job's stream has a reader, so a model that can stream streams into it."""
    refuse_bad_options(loaded.manifest.parameters_of(runnable.id), opts,
                       f"provider {loaded.manifest.id!r} model {runnable.id!r}")
    if not CALL_OBSERVERS:
        return _call(loaded, runnable, model_input, opts, chunks)
    started = time.perf_counter()
    try:
        output = _call(loaded, runnable, model_input, opts, chunks)
    except BaseException as exc:
        for observe in CALL_OBSERVERS:
            observe(loaded, runnable, route, time.perf_counter() - started, exc)
        raise
    for observe in CALL_OBSERVERS:
        observe(loaded, runnable, route, time.perf_counter() - started, None)
    return output


def _call(loaded: LoadedProvider, runnable: Model, model_input: Any, opts: dict[str, Any],
          chunks: ChunkWriter | None) -> Asset:
    try:
        if chunks is not None and runnable.can_stream:
            output = _streamed(loaded, runnable, model_input, opts, chunks)
        else:
            output = runnable.transform(model_input, opts)
    except PASS_THROUGH:
        raise
    except Exception as exc:
        raise ProviderExecutionError(
            f"provider {loaded.manifest.id!r} model {runnable.id!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(output, Asset):
        raise ProviderExecutionError(
            f"provider {loaded.manifest.id!r} model {runnable.id!r} returned {type(output).__name__}, not an asset"
        )
    return output


def _streamed(loaded: LoadedProvider, runnable: Model, model_input: Any, opts: dict[str, Any],
              chunks: ChunkWriter) -> Asset:
    """The model's stream into ``chunks``. Broken before a chunk was written, its error stays as it is (a
    transient one fails over or is retried); after, the reader sees an ``error`` entry, and a transient
    error becomes ``StreamBrokenError``: neither a retry nor another candidate may start a second output."""
    try:
        return run_stream(runnable.stream(model_input, opts), chunks)
    except Exception as exc:
        if not chunks.sent:
            chunks.discard()
            raise
        chunks.broke(exc)
        if isinstance(exc, MediaConduitError) and not isinstance(exc, TRANSIENT_EXCEPTIONS):
            raise
        raise StreamBrokenError(f"provider {loaded.manifest.id!r} model {runnable.id!r}: the stream broke after "
                                f"{chunks.sent} chunks: {type(exc).__name__}: {exc}") from exc


class Meter:
    """A call's price: estimated from the model's pricing and the input's size before it, from the
    usage the API reported after it."""

    def __init__(self, loaded: LoadedProvider, runnable: Model, model_input: Any, opts: dict[str, Any],
                 pricing: dict[str, Any] | None = None, size: Size | None = None) -> None:
        self.remote = loaded.provider.type == ProviderType.REMOTE
        self.pricing = pricing if pricing is not None else loaded.provider.pricing_of(runnable.id)
        self._input, self._opts = model_input, opts
        if size is not None:
            self.size = size
        self.estimate: float | None = None
        if is_priced(self.pricing):  # an unpriced model (most local ones) costs no sizing per job
            cap = capability_of(loaded, runnable)
            self.estimate = estimate_usd(self.pricing, self.size, str(cap).split("-to-")[-1] if cap else None)

    @functools.cached_property
    def size(self) -> Size:
        return job_size(self._input, self._opts)

    @property
    def counted(self) -> bool:
        """Whether results report a cost at all: remote APIs always, anything with a pricing too."""
        return self.remote or is_priced(self.pricing)

    def finish(self, output: Asset) -> float | None:
        """Put ``cost`` in the output's metadata and return what the call cost (None: unknown)."""
        if not self.counted:
            return None
        usd, source = actual_usd(self.pricing, output, self.size, self.estimate)
        reported = output.metadata.get("cost")
        currency = reported.get("currency", "USD") if isinstance(reported, dict) else (self.pricing or {}).get("currency", "USD")
        output.metadata["cost"] = {**(reported if isinstance(reported, dict) else {}),
                                   **cost_record(self.estimate, usd, source, str(currency))}
        return usd

    def tokens(self, output: Asset) -> int | None:
        """Tokens the call used, as reported (for ``tpm``)."""
        usage = output.metadata.get("usage")
        total = usage.get("total_tokens") if isinstance(usage, dict) else None
        return int(total) if isinstance(total, int) else None


def batch_scope(batch: Any) -> tuple[str, float | None] | None:
    """The spend scope and budget of a batch header, or None for a job outside a batch."""
    if not isinstance(batch, dict) or not isinstance(batch.get("id"), str):
        return None
    budget = batch.get("budget_usd")
    return f"batch:{batch['id']}", float(budget) if isinstance(budget, (int, float)) else None


def hold_seconds() -> float:
    """How long a budget hold outlives a worker that died holding it: the longest a job may run."""
    return float(get_settings().task_time_limit)


BUDGET_RECHECK = 1.0
"""Seconds before a job whose estimate waits for the budget holds of jobs in flight is tried again."""


def hold_budget(state: RoutingState, scopes: list[tuple[str, float | None]], estimate: float | None, who: str) -> str | None:
    """Hold ``estimate`` against every scope that has a budget, before the call; the hold id (None: no budget).

    Refused for good (``BudgetExceededError``) when the estimate exceeds what a budget has left after what
    was spent; for now (``BudgetHeldError``) when it fits that but not beside the holds of jobs in flight. So a
    budget is overrun only by as much as the jobs in flight cost more than their estimates.
    """
    budgets = [(scope, budget) for scope, budget in scopes if budget is not None]
    if not budgets:
        return None
    if estimate is None:
        raise BudgetExceededError(f"{who} cannot be priced before the call (no pricing, or priced per second of "
                                  f"an unknown length), so the budget of {budgets[0][0]} cannot cover it (give a "
                                  "route candidate 'pricing', or the job a 'duration'); refused before any call")
    held = state.reserve(budgets, estimate, hold_seconds())
    if not isinstance(held, Refusal):
        return held
    budget = dict(budgets)[held.scope] or 0.0
    detail = (f"{who}: estimated cost ${estimate:.6f} exceeds the ${max(budget - held.spent - held.held, 0.0):.6f} "
              f"left of the ${budget:.6f} budget of {held.scope} (spent ${held.spent:.6f}, ${held.held:.6f} held by "
              "jobs in flight)")
    if held.spent + estimate > budget + 1e-12:
        raise BudgetExceededError(f"{detail}; refused before any call")
    raise BudgetHeldError(f"{detail}; waiting for the jobs in flight to settle",
                     retry_after=BUDGET_RECHECK)


def serve_direct(provider_url: str, model: str, model_input: Any, opts: dict[str, Any], batch: Any = None,
                 chunks: ChunkWriter | None = None) -> Served:
    """A job naming one provider and model: no failover; a batch's budget is held before the call."""
    loaded, runnable = prepare(provider_url, model)
    meter = Meter(loaded, runnable, model_input, opts)
    scope = batch_scope(batch)
    reservation = None
    if scope is not None and scope[1] is not None:
        reservation = hold_budget(get_state(), [scope], meter.estimate,
                                  f"provider {loaded.manifest.id!r} model {model!r}")
    usd = None
    started = time.perf_counter()
    try:
        output = execute(loaded, runnable, model_input, opts, chunks=chunks)
        usd = meter.finish(output)
    finally:
        if scope is not None and (reservation or usd):
            get_state().settle([(scope[0], get_settings().result_expires)], reservation, usd)
    return Served(loaded, runnable, output, provider_url, model, started)
