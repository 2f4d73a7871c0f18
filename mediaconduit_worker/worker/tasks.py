"""The one task, ``mediaconduit.transform``: load provider, run model, return a TransformResult."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import Task
from celery.utils.saferepr import saferepr

from ..assets import Asset, job_input
from ..capabilities import parse_capability
from ..errors import InvalidInputError, MediaConduitError, ProviderExecutionError
from ..models import Model
from ..provenance import complete_record
from ..provider import DockerProvider
from ..record import ResultMetadata, SourceInfo, TransformResult, redact
from . import cache as result_cache
from .app import app
from .deadlines import JobDeadline
from .loader import LoadedProvider, get_registry
from .reliability import TRANSIENT_EXCEPTIONS, WORKER_LOST_RETRY_DELAY, CrashAwareRequest, backoff
from .replay import SERVICE_PIN_OPTION, pin_services, service_record
from .routing import TRANSFORM_TASK

log = logging.getLogger(__name__)
#: Bounds transient retries and redeliveries after a lost worker process alike: Celery counts both
#: in ``request.retries``.
MAX_RETRIES = 5


class TransformTask(Task):
    """Checks payloads are JSON before queueing and keeps secrets out of events, logs and Flower."""

    #: Names a job that crashes its worker process on every delivery a poison job.
    Request = CrashAwareRequest

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        try:
            json.dumps([args or [], kwargs or {}])
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"transform arguments must be JSON (input, provider, model, options): {exc}") from None
        options.setdefault("argsrepr", saferepr(redact(list(args or []))))
        options.setdefault("kwargsrepr", saferepr(redact(dict(kwargs or {}))))
        # Celery would stamp the producer's configured limits into the message; leave them to the worker
        # (MEDIACONDUIT_TASK_TIME_LIMIT where the job runs) unless this call sets its own.
        options.setdefault("time_limit", None)
        options.setdefault("soft_time_limit", None)
        return super().apply_async(args, kwargs, **options)


def run_model(loaded: LoadedProvider, model: str, model_input: Any, opts: dict[str, Any]) -> tuple[Model, Any]:
    """The provider's part of a job: the runnable model (its service started) and its output."""
    runnable = loaded.provider.get_model(model)  # may discover models over HTTP: transient errors retry
    if isinstance(loaded.provider, DockerProvider):
        loaded.provider.ensure_service()
    return runnable, runnable.transform(model_input, opts)


@app.task(name=TRANSFORM_TASK, bind=True, base=TransformTask, max_retries=MAX_RETRIES,
          default_retry_delay=WORKER_LOST_RETRY_DELAY)
def transform(self: Task, input: Any, provider: str, model: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``input`` into an output asset with ``provider``'s ``model``; JSON TransformResult out."""
    request = self.request  # a thread-local lookup each time: read it once
    request_args, request_kwargs = request.args, request.kwargs
    # result_extended stores the request's args in the backend: keep secrets out of it.
    request.args = redact(list(request_args or []))
    request.kwargs = redact(dict(request_kwargs or {}))
    started = time.perf_counter()
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(f"options must be a JSON object, got {type(options).__name__}")
    opts = dict(options or {})
    requested_cap = opts.pop("capability", None)
    pin_services(opts.pop(SERVICE_PIN_OPTION, None))  # replay: this job's service at the recorded commit
    if not isinstance(provider, str) or not provider:
        raise InvalidInputError(f"provider must be a URL string, got {provider!r}")
    if not isinstance(model, str) or not model:
        raise InvalidInputError(f"model must be a model id string, got {model!r}")
    model_input = job_input(input)
    deadline = JobDeadline(self, provider, model)  # the hard time limit, held in every pool
    loaded = deadline.run(get_registry().get, provider)
    deadline.name(loaded.manifest.id)
    if (hit := result_cache.lookup(self, loaded, model, opts, model_input, deadline, started)) is not None:
        return hit  # opt-in (options.cache or the manifest): no provider call
    try:
        runnable, output = deadline.run(run_model, loaded, model, model_input, opts)
    except TRANSIENT_EXCEPTIONS as exc:
        countdown = backoff(request.retries, getattr(exc, "retry_after", None))
        log.warning("transient error from %s/%s (%s); retry in %.1fs", loaded.manifest.id, model, exc, countdown)
        raise self.retry(exc=exc, countdown=countdown, args=request_args, kwargs=request_kwargs)
    except MediaConduitError:
        raise
    except Exception as exc:
        raise ProviderExecutionError(
            f"provider {loaded.manifest.id!r} model {model!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(output, Asset):
        raise ProviderExecutionError(
            f"provider {loaded.manifest.id!r} model {model!r} returned {type(output).__name__}, not an asset"
        )
    if "generation_prompt" not in output.metadata:
        output.metadata["generation_prompt"] = runnable.generation_prompt(model_input, opts, started)
    cap = parse_capability(requested_cap) if isinstance(requested_cap, str) else None
    cap = cap or runnable.capability or loaded.manifest.capability_of(model)
    output.metadata["generation_prompt"] = complete_record(
        output.metadata["generation_prompt"], input=model_input, output=output, provider_url=provider,
        source=loaded.source, capability=str(cap) if cap else None, service=service_record(loaded.provider))
    result = TransformResult.of(output, ResultMetadata(
        generation_prompt=output.metadata["generation_prompt"],
        provider=loaded.manifest.id,
        provider_url=provider,
        model=model,
        capability=str(cap) if cap else None,
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
        source=SourceInfo(**loaded.source),
        task_id=request.id,
        worker=request.hostname,
    ))
    return result_cache.store(self, result.model_dump(mode="json", exclude_none=True))
