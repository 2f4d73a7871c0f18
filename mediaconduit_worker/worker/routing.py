"""Which queue a transform belongs to, decided at the producer (or the worker sending a chain step)."""

from __future__ import annotations

import logging
from typing import Any

from ..capabilities import MediaCapability, parse_capability
from ..errors import InvalidInputError, ManifestError, MediaConduitError, ProviderNotAllowedError
from ..sources import check_allowed
from .loader import get_registry

log = logging.getLogger(__name__)
DEFAULT_QUEUE = "mediaconduit"
TRANSFORM_TASK = "mediaconduit.transform"
CAPABILITY_QUEUES = [c.value for c in MediaCapability]


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
    try:
        return resolve_capability(provider, model, options)
    except ProviderNotAllowedError:
        raise
    except MediaConduitError as exc:
        log.warning("job for %s model %r: cannot tell its capability (%s); using the default queue",
                    provider, model, exc)
        return None


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
