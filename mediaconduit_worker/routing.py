"""Which queue a transform belongs to, decided at the producer (or the worker sending a chain step)."""

from __future__ import annotations

import logging
from typing import Any

from .capabilities import MediaCapability, parse_capability
from .errors import MediaConduitError

log = logging.getLogger(__name__)


def capability_for(provider: Any, model: Any, options: Any) -> MediaCapability | None:
    """The explicit ``capability`` option, else the provider manifest's entry for the model, else None."""
    explicit = options.get("capability") if isinstance(options, dict) else None
    if isinstance(explicit, str) and (cap := parse_capability(explicit)):
        return cap
    if explicit is not None:
        log.warning("job for model %r: option capability=%r is not a capability; using the default queue", model, explicit)
        return None
    if not isinstance(provider, str) or not isinstance(model, str):
        log.warning("job with provider=%r model=%r: cannot tell its capability; using the default queue", provider, model)
        return None
    from .registry import get_registry

    try:
        manifest, _ = get_registry().manifest(provider)
    except MediaConduitError as exc:
        log.warning("job for %s model %r: cannot tell its capability (%s); using the default queue", provider, model, exc)
        return None
    cap = manifest.capability_of(model)
    if cap is None:
        log.warning("job for %s model %r: the manifest gives no capability; using the default queue", provider, model)
    return cap
