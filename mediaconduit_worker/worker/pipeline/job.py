"""A transform job as one value, parsed once from the message: what to run, and how to run it.

The model's own options and the options the system reserves for itself are kept apart. Execution
options travel in the message header ``mediaconduit_exec`` (a JSON object), which the producer sets;
messages that put ``capability`` or ``cache`` in the options (older producers, Flower, other
languages) still work, and those keys are taken out before the model sees the options. Pinning a
service commit is accepted only from the header: a submitter's options cannot choose the code that
runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...assets import job_input
from ...capabilities import MediaCapability, parse_capability
from ...errors import InvalidInputError
from ...payload import check_json
from ..headers import EXEC_HEADER
from ..routes import is_route

LEGACY_OPTIONS = ("capability", "cache")
"""Execution options that older messages carry among the model's options."""
ARGUMENTS = ("input", "provider", "model", "options")


def named_arguments(args: Any, kwargs: Any) -> dict[str, Any]:
    """A transform's arguments by name (``input``, ``provider``, ``model``, ``options``)."""
    return {**dict(zip(ARGUMENTS, args or ())), **dict(kwargs or {})}


@dataclass(frozen=True, slots=True)
class Execution:
    """How a job runs, apart from what the model is asked to do."""

    capability: MediaCapability | None = None
    """The queue the job asked for (else the manifest's entry for the model decides)."""
    cache: bool | None = None
    """``True``/``False`` overrides the model's manifest ``cache`` entry; None leaves it to the manifest."""
    service_commit: str | None = None
    """Replay: the commit the provider's Docker service runs at for this job only."""
    batch: Any = None
    """The batch header (id and budget) of a batch's job."""

    def as_header(self) -> dict[str, Any]:
        """The ``mediaconduit_exec`` header that carries these options (the batch has its own header)."""
        header: dict[str, Any] = {}
        if self.capability is not None:
            header["capability"] = self.capability.value
        if self.cache is not None:
            header["cache"] = self.cache
        if self.service_commit is not None:
            header["service_commit"] = self.service_commit
        return header


def _capability(value: Any) -> MediaCapability | None:
    if value is None:
        return None
    cap = parse_capability(value) if isinstance(value, str) else None
    if cap is None:
        raise InvalidInputError(f"execution option 'capability' must name a capability (such as 'text-to-text'), "
                                f"got {value!r}")
    return cap


def split_options(options: Any, header: Any = None, batch: Any = None) -> tuple[dict[str, Any], Execution]:
    """The model's own options, and the execution options from ``header`` (then legacy option keys)."""
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(f"options must be a JSON object, got {type(options).__name__}")
    own = dict(options or {})
    legacy = {k: own.pop(k) for k in LEGACY_OPTIONS if k in own}
    given = header if isinstance(header, dict) else {}
    if header is not None and not isinstance(header, dict):
        raise InvalidInputError(f"message header {EXEC_HEADER!r} must be a JSON object, got {type(header).__name__}")
    cache = given.get("cache", legacy.get("cache"))
    if cache is not None and not isinstance(cache, bool):
        raise InvalidInputError(f"execution option 'cache' must be true or false, got {cache!r}")
    commit = given.get("service_commit")
    if commit is not None and (not isinstance(commit, str) or not commit):
        raise InvalidInputError(f"execution option 'service_commit' must be a commit id, got {commit!r}")
    capability = _capability(given.get("capability", legacy.get("capability")))
    return own, Execution(capability=capability, cache=cache, service_commit=commit, batch=batch)


@dataclass(frozen=True, slots=True)
class Job:
    """One job, checked: its input decoded for the model, its options split from its execution options."""

    input: Any
    """What the model takes: a ``str``, an asset, or a list of them."""
    provider: str
    """A provider URL, or ``route:NAME``."""
    model: str | None
    """The model id (None for a route, which picks its candidates' models)."""
    options: dict[str, Any]
    """The model's own options, without any execution option."""
    execution: Execution
    routed: bool
    task_id: str

    @classmethod
    def parse(cls, args: tuple[Any, Any, Any, Any], request: Any, batch: Any = None) -> Job:
        """Check a transform's arguments and headers; ``InvalidInputError`` names the culprit."""
        input, provider, model, options = args
        # A message from elsewhere (Flower, another language) skipped the producer's check; its size was
        # checked before it reached this process.
        check_json(named_arguments(args, None))
        own, execution = split_options(options, getattr(request, EXEC_HEADER, None), batch)
        if not isinstance(provider, str) or not provider:
            raise InvalidInputError(f"provider must be a URL string, got {provider!r}")
        routed = is_route(provider)
        if not routed and (not isinstance(model, str) or not model):
            raise InvalidInputError(f"model must be a model id string, got {model!r}")
        return cls(job_input(input), provider, model, own, execution, routed, request.id)
