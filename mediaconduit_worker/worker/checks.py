"""The checks a producer makes before it queues a step, shared by the CLI and the HTTP gateway: the
provider URL is allowed and readable, the model is in its manifest, the options fit its declared
parameters, and the step's capability (its queue) is known. So a bad job fails with its culprit named
before anything is queued, whoever sends it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError, UnknownModelError


@dataclass(frozen=True)
class CheckedStep:
    """A step that passed: the queue it goes to, and warnings about options its model does not declare."""

    queue: str
    warnings: list[str] = field(default_factory=list)


def check_step(provider: str, model: str | None, options: dict[str, Any]) -> CheckedStep:
    """The step's queue and warnings, or the error naming what is wrong (``MediaConduitError``)."""
    from ..manifest import refuse_bad_options, undeclared_options
    from .loader import get_registry
    from .pipeline.job import LEGACY_OPTIONS
    from .routes import is_route, resolve_capability, route_for

    if is_route(provider):
        return CheckedStep(route_for(provider, model, options).capability.value)
    if not model:
        raise InvalidInputError(f"provider {provider}: a model is required (only a route:NAME chooses its own)")
    manifest, _ = get_registry().manifest(provider)
    if manifest.models and not manifest.dynamic_models and manifest.model_entry(model) is None:
        known = ", ".join(m.id for m in manifest.models)
        raise UnknownModelError(f"provider {manifest.id!r} has no model {model!r} (models: {known})")
    own = {k: v for k, v in options.items() if k not in LEGACY_OPTIONS}
    who = f"provider {manifest.id!r} model {model!r}"
    refuse_bad_options(manifest.parameters_of(model), own, who)
    warnings = undeclared_options(manifest.parameters_of(model), own, who)
    return CheckedStep(resolve_capability(provider, model, options).value, list(warnings))
