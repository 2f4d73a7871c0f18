"""Where a job goes. A direct job goes to the queue of its model's capability, from the provider's
manifest (``capability_for``). A ``route:NAME`` job goes by the routes file: named routes, each a list of
candidate providers/models and a strategy to choose among them. Producers read it to pick the job's
queue, workers to serve the job.

Why checked whole at load: a route whose candidates disagree on their capability, or that names an
unknown strategy, must fail at the producer, naming the route, the candidate and the field, before
any job is queued, not on some worker later. The file is read again when it changes on disk (one
``stat`` per lookup), so producers and workers pick up an edit without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator

from ..capabilities import MediaCapability, parse_capability
from ..errors import (
    InvalidInputError,
    ManifestError,
    MediaConduitError,
    ProviderNotAllowedError,
    ProviderSourceError,
    RouteError,
)
from ..redaction import REDACTED, is_secret_key, redact, redact_url
from ..settings import get_settings
from ..sources import check_allowed
from .limits import CooldownPolicy, Limits, candidate_id
from .loader import get_registry

log = logging.getLogger(__name__)
ROUTE_PREFIX = "route:"
#: Seconds during which a provider and model whose capability could not be told go to the default queue
#: without another try: a batch of 10,000 jobs for an unreachable git host makes one clone attempt, not
#: 10,000, and logs one warning.
UNRESOLVED_FOR = 30.0
_unresolved: dict[tuple[str, str], float] = {}
Strategy = Literal["fallback", "weighted", "least-busy", "latency", "cost"]


class CandidateSpec(BaseModel):
    """One provider/model a route may send a job to, with its cluster-wide limits."""

    model_config = ConfigDict(extra="forbid")
    provider: str
    model: str
    capability: str | None = None
    """The queue, when the provider's manifest cannot tell it for this model."""
    max_concurrency: PositiveInt | None = None
    """Calls in flight at once, across every worker process."""
    rpm: PositiveInt | None = None
    """Calls started per ``rate_window`` (a minute by default), across every worker."""
    tpm: PositiveInt | None = None
    """Tokens (estimated at the start, reported at the end) per ``rate_window``, across every worker."""
    weight: PositiveFloat = 1.0
    pricing: dict[str, float] | None = None
    """USD prices (``prompt``, ``completion``, ``request``, ``per_image``, ``per_second``, ``per_character``);
    overrides what the provider reports."""

    @field_validator("provider", "model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class RouteSpec(BaseModel):
    """A route as written in the file."""

    model_config = ConfigDict(extra="forbid")
    strategy: Strategy = "fallback"
    candidates: list[CandidateSpec] = Field(min_length=1)
    budget_usd: float | None = Field(default=None, ge=0)
    """Total USD allowed through this route (spend is kept in Redis)."""
    allowed_fails: PositiveInt = 3
    cooldown_window: PositiveFloat = 60.0
    cooldown: float = Field(default=30.0, ge=0)
    rate_window: PositiveFloat = 60.0
    """Seconds ``rpm`` and ``tpm`` count over (shorten it only for tests)."""
    lease_ttl: PositiveFloat = 30.0
    """Seconds a concurrency slot outlives a worker that died holding it (renewed while a call runs)."""
    latency_buffer: float = Field(default=0.1, ge=0)
    """``latency``: candidates within this fraction of the best p50 share the load."""
    max_wait: float = Field(default=60.0, ge=0)
    """Seconds a job waits for a slot when every candidate left is at its limit, before it is retried."""


class RoutesFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)
    """Other names of routes, alias -> route name: the model names an OpenAI client sends (``gateway/openai.py``)."""


@dataclass(frozen=True)
class Candidate:
    """A candidate as workers use it: its place in the route, its shared-state key and its limits."""

    index: int
    """1-based, as error messages and results count."""
    spec: CandidateSpec
    cid: str
    limits: Limits

    @property
    def provider(self) -> str:
        return self.spec.provider

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def label(self) -> str:
        return f"candidate {self.index} ({self.provider} {self.model})"

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "provider": self.provider, "model": self.model}


@dataclass(frozen=True)
class Route:
    name: str
    spec: RouteSpec
    capability: MediaCapability
    candidates: list[Candidate]
    policy: CooldownPolicy

    @property
    def scope(self) -> str:
        """Where this route's spend is kept."""
        return f"route:{self.name}"


@dataclass
class Routes:
    """A loaded, checked routes file."""

    path: Path
    routes: dict[str, Route] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias -> route name, every target a route of ``routes``."""

    def named(self, name: str) -> Route | None:
        """The route called ``name``, or the one an alias ``name`` stands for; None for any other name."""
        return self.routes.get(self.aliases.get(name, name))

    def get(self, name: str) -> Route:
        route = self.routes.get(name)
        if route is None:
            known = ", ".join(sorted(self.routes)) or "none"
            raise RouteError(f"no route {name!r} in the routes file {self.path} (routes: {known})")
        return route


def is_route(provider: Any) -> bool:
    return isinstance(provider, str) and provider.startswith(ROUTE_PREFIX)


def route_name(provider: str) -> str:
    name = provider[len(ROUTE_PREFIX):].strip()
    if not name:
        raise RouteError(f"{provider!r} names no route: write route:NAME")
    return name


def _where(loc: tuple[Any, ...], data: Any) -> str:
    """``('routes', 'chat', 'candidates', 1, 'model')`` as "route 'chat', candidate 2 (URL): field 'model'"."""
    parts: list[str] = []
    rest = list(loc)
    if rest[:1] == ["aliases"] and len(rest) > 1:
        parts.append(f"alias {rest[1]!r}")
        rest = rest[2:]
    elif rest[:1] == ["routes"] and len(rest) > 1:
        name = rest[1]
        parts.append(f"route {name!r}")
        rest = rest[2:]
        if rest[:1] == ["candidates"] and len(rest) > 1 and isinstance(rest[1], int):
            index = rest[1]
            try:
                provider = data["routes"][name]["candidates"][index].get("provider")
            except (KeyError, IndexError, TypeError, AttributeError):
                provider = None
            parts.append(f"candidate {index + 1}" + (f" ({provider})" if isinstance(provider, str) else ""))
            rest = rest[2:]
    if rest:
        parts.append("field " + repr(".".join(str(p) for p in rest)))
    return ", ".join(parts) or "the file"


QUOTED_CHARS = 80
"""A bad value quoted in an error is cut to this many characters."""


def _got(error: Any) -> str:
    """``, got 'round-robin'``: the bad value of a validation error, as written (redacted, cut short); nothing
    for a missing field, which has no value."""
    if error["type"] == "missing":
        return ""
    field = error["loc"][-1] if error["loc"] else None
    value = REDACTED if isinstance(field, str) and is_secret_key(field) else redact(error["input"])
    text = repr(value)
    return ", got " + (text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS - 1] + "…")


def parse_routes(data: Any, path: Path) -> RoutesFileModel:
    """The file's schema: every error names the route, the candidate and the field, and quotes the bad value."""
    if not isinstance(data, dict):
        raise RouteError(f"routes file {path}: must be a mapping with a 'routes' key, got {type(data).__name__}")
    if "routes" not in data:
        found = ", ".join(repr(k) for k in list(data)[:5]) or "nothing"
        raise RouteError(f"routes file {path}: no 'routes' key at the top level (found {found}); each route goes "
                         "under it: 'routes: {NAME: {candidates: [...]}}'")
    try:
        model = RoutesFileModel.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_where(tuple(e['loc']), data)}: {e['msg'].removeprefix('Value error, ')}{_got(e)}"
                    for e in exc.errors()]
        raise RouteError(f"routes file {path}: " + "; ".join(problems)) from None
    problems = [f"alias {alias!r}: {why}" for alias, target in model.aliases.items()
                if (why := _bad_alias(alias, target, model.routes))]
    if problems:
        raise RouteError(f"routes file {path}: " + "; ".join(problems))
    return model


def _bad_alias(alias: str, target: str, routes: dict[str, RouteSpec]) -> str | None:
    """Why an alias cannot stand: a blank name, a route's own name, or a target that is no route (an alias of
    an alias included: one hop, so a name's route is plain to read)."""
    if not alias.strip():
        return "must not be empty"
    if alias in routes:
        return "is a route's name already: an alias names a route by another name"
    if target not in routes:
        return f"names no route {target!r} (routes: {', '.join(sorted(routes)) or 'none'})"
    return None


def build_routes(model: RoutesFileModel, path: Path) -> Routes:
    """Each candidate's capability from its manifest (via the provider registry); one capability per route."""
    routes = Routes(path, aliases=dict(model.aliases))
    problems: list[str] = []
    for name, spec in model.routes.items():
        caps: list[tuple[int, MediaCapability]] = []
        for i, cand in enumerate(spec.candidates, 1):
            opts = {"capability": cand.capability} if cand.capability else {}
            try:
                check_allowed(cand.provider)  # even when an explicit capability means no manifest is read
            except ProviderSourceError as exc:
                problems.append(f"route {name!r}, candidate {i} ({cand.provider} {cand.model}): {exc}")
                continue
            try:
                caps.append((i, resolve_capability(cand.provider, cand.model, opts)))
            except MediaConduitError as exc:
                problems.append(f"route {name!r}, candidate {i} ({cand.provider} {cand.model}): cannot tell its "
                                f"capability: {exc}")
                continue
            unknown = None if cand.capability else _unknown_model(cand.provider, cand.model)
            if unknown:
                problems.append(f"route {name!r}, candidate {i} ({cand.provider} {cand.model}), field 'model': {unknown}")
        kinds = {c for _, c in caps}
        if len(kinds) > 1:
            listed = ", ".join(f"candidate {i} ({spec.candidates[i - 1].provider} {spec.candidates[i - 1].model}) "
                               f"is {c}" for i, c in caps)
            problems.append(f"route {name!r} mixes capabilities: {listed}; every candidate of a route must share one")
        if problems or not caps:
            continue
        candidates = [
            Candidate(i, c, candidate_id(c.provider, c.model),
                      Limits(c.max_concurrency, c.rpm, c.tpm, spec.rate_window, spec.lease_ttl))
            for i, c in enumerate(spec.candidates, 1)
        ]
        routes.routes[name] = Route(name, spec, caps[0][1], candidates,
                                    CooldownPolicy(spec.allowed_fails, spec.cooldown_window, spec.cooldown))
    if problems:
        raise RouteError(f"routes file {path}: " + "; ".join(problems))
    return routes


def _unknown_model(provider: str, model: str) -> str | None:
    """Why a candidate's model is not its provider's (a manifest listing its models, and not this one); None
    when it is, or when only the provider's API knows its models. The manifest is in the cache already:
    the capability was just read from it."""
    manifest, _ = get_registry().manifest(provider)
    if not manifest.models or manifest.dynamic_models or manifest.model_entry(model) is not None:
        return None
    return f"provider {manifest.id!r} has no model {model!r} (models: {', '.join(m.id for m in manifest.models)})"


def load_routes(path: Path) -> Routes:
    """Read, parse and check a routes file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RouteError(f"no routes file at {path} (set MEDIACONDUIT_ROUTES, or write $MEDIACONDUIT_HOME/routes.yml)") \
            from None
    except OSError as exc:
        raise RouteError(f"routes file {path}: cannot read it: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RouteError(f"routes file {path} is not valid YAML: {exc}") from None
    return build_routes(parse_routes(data, path), path)


class _Cache:
    """The last file read, kept until its path, inode, size or mtime changes. A bad file's error is kept
    for ``ERROR_TTL`` seconds only: it may come from a provider repository that could not be fetched."""

    ERROR_TTL = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._value: Routes | RouteError | None = None
        self._read_at = 0.0

    def get(self, path: Path) -> Routes:
        try:
            st = os.stat(path)
            key: tuple[Any, ...] = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = (str(path), None)
        with self._lock:
            stale = isinstance(self._value, RouteError) and time.monotonic() - self._read_at > self.ERROR_TTL
            if key != self._key or self._value is None or stale:
                try:
                    self._value = load_routes(path)
                except RouteError as exc:
                    self._value = exc
                self._key, self._read_at = key, time.monotonic()
            value = self._value
        if isinstance(value, RouteError):
            raise RouteError(str(value))
        return value


_cache = _Cache()


def get_routes() -> Routes:
    """The routes file at ``MEDIACONDUIT_ROUTES`` (default ``$MEDIACONDUIT_HOME/routes.yml``), checked."""
    return _cache.get(get_settings().routes_file)


def route_for(provider: str, model: Any = None, options: Any = None) -> Route:
    """The route a ``route:NAME`` job names, checked against the job: a route chooses the model itself, and
    an explicit ``capability`` option must be the route's."""
    route = get_routes().get(route_name(provider))
    if model not in (None, ""):
        raise InvalidInputError(f"job for {provider} names model {model!r}: a route chooses its candidates' "
                                "models, pass None")
    explicit = options.get("capability") if isinstance(options, dict) else None
    if explicit is not None and resolve_capability(provider, None, {"capability": explicit}) != route.capability:
        raise InvalidInputError(f"job for {provider} asks for capability {explicit!r}, but the route serves "
                                f"{route.capability}")
    return route


# -- a direct job: its provider manifest's capability -----------------------------------------------
def resolve_capability(provider: Any, model: Any, options: Any) -> MediaCapability:
    """The explicit ``capability`` option, else the provider manifest's entry for the model.

    Strict: raises a ``MediaConduitError`` saying why it cannot tell (the batch CLI refuses the job).
    """
    explicit = options.get("capability") if isinstance(options, dict) else None
    if explicit is not None:
        cap = parse_capability(explicit) if isinstance(explicit, str) else None
        if cap is None:
            raise InvalidInputError(f"unknown capability {explicit!r} for {model!r}")
        return cap
    if not isinstance(provider, str) or not isinstance(model, str):
        raise InvalidInputError(f"provider={provider!r} model={model!r} are not a provider URL and a model id")
    manifest, _ = get_registry().manifest(provider)
    cap = manifest.capability_of(model)
    if cap is None:
        raise ManifestError(f"the manifest of provider {manifest.id!r} gives no capability for model {model!r}")
    return cap


def capability_for(provider: Any, model: Any, options: Any) -> MediaCapability | None:
    """``resolve_capability``, or None (the default queue) with a warning naming why.

    A URL outside ``MEDIACONDUIT_PROVIDER_ALLOW`` is not a "cannot tell": it raises, so the producer's
    ``transform.delay`` refuses the job before anything is queued.
    """
    if isinstance(provider, str):
        check_allowed(provider)  # even when an explicit capability means no manifest is read
    explicit = isinstance(options, dict) and "capability" in options
    key = (provider, model) if isinstance(provider, str) and isinstance(model, str) and not explicit else None
    if key is not None and _unresolved.get(key, 0.0) > time.monotonic():
        return None
    try:
        return resolve_capability(provider, model, options)
    except ProviderNotAllowedError:
        raise
    except MediaConduitError as exc:
        shown = redact_url(provider) if isinstance(provider, str) else provider
        log.warning("job for %s model %r: cannot tell its capability (%s); using the default queue for %gs",
                    shown, model, exc, UNRESOLVED_FOR)
        if key is not None:
            _remember_unresolved(key)
        return None


def _remember_unresolved(key: tuple[str, str]) -> None:
    """Bounded: a producer open to untrusted submitters (Flower) may see any number of bad URLs."""
    now = time.monotonic()
    if len(_unresolved) >= 1024:
        for stale in [k for k, until in _unresolved.items() if until <= now]:
            del _unresolved[stale]
        if len(_unresolved) >= 1024:
            _unresolved.clear()
    _unresolved[key] = now + UNRESOLVED_FOR
