"""Which queue a transform belongs to, decided at the producer (or the worker sending a chain step)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..capabilities import MediaCapability, parse_capability
from ..errors import InvalidInputError, ManifestError, MediaConduitError, ProviderNotAllowedError
from ..record import strip_userinfo
from ..sources import check_allowed
from .loader import get_registry

log = logging.getLogger(__name__)
DEFAULT_QUEUE = "mediaconduit"
TRANSFORM_TASK = "mediaconduit.transform"
CAPABILITY_QUEUES = [c.value for c in MediaCapability]
#: Seconds during which a provider and model whose capability could not be told go to the default queue
#: without another try: a batch of 10,000 jobs for an unreachable git host makes one clone attempt, not
#: 10,000, and logs one warning.
UNRESOLVED_FOR = 30.0
_unresolved: dict[tuple[str, str], float] = {}


def named_arguments(args: Any, kwargs: Any) -> dict[str, Any]:
    """A transform's arguments by name (``input``, ``provider``, ``model``, ``options``)."""
    return {**dict(zip(("input", "provider", "model", "options"), args or ())), **dict(kwargs or {})}


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
        shown = strip_userinfo(provider) if isinstance(provider, str) else provider
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


def route_transform(name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_: Any) -> dict[str, str] | None:
    """Send a transform to its capability's queue (explicit option, else the manifest's model entry)."""
    if name != TRANSFORM_TASK:
        return None
    call = named_arguments(args, kwargs)
    from .routes import is_route, route_for  # routes.py reads capabilities through this module

    if is_route(call.get("provider")):  # a bad routes file or route name is refused here, before queueing
        return {"queue": route_for(call["provider"], call.get("model"), call.get("options")).capability.value}
    cap = capability_for(call.get("provider"), call.get("model"), call.get("options"))
    return {"queue": cap.value if cap else DEFAULT_QUEUE}
