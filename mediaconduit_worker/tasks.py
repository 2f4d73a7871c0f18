"""The one task, ``mediaconduit.transform``: load provider, run model, return a TransformResult."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import Task
from celery.utils.saferepr import saferepr

from .assets import Asset, asset_from_json
from .capabilities import parse_capability
from .celery_app import TRANSFORM_TASK, app
from .errors import InvalidInputError, MediaConduitError, ProviderExecutionError, TransientError
from .prompt import redact
from .provider import DockerProvider
from .registry import get_registry
from .reliability import TRANSIENT_EXCEPTIONS, WORKER_LOST_RETRY_DELAY, backoff
from .results import ResultMetadata, SourceInfo, TransformResult, asset_ref

log = logging.getLogger(__name__)
MAX_TRANSIENT_RETRIES = 5


class TransformTask(Task):
    """Checks payloads are JSON before queueing and keeps secrets out of events, logs and Flower."""

    #: Worker-side request that names a job crashing its worker process on every delivery a poison job.
    Request = "mediaconduit_worker.reliability:CrashAwareRequest"

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:  # type: ignore[override]
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


def to_model_input(value: Any) -> Any:
    """Job input as models take it: ``str``, an asset (from asset JSON or a TransformResult) or a list."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        try:
            return asset_from_json(value)
        except ValueError as exc:
            raise InvalidInputError(f"invalid input: {exc}") from None
    if isinstance(value, list) and value:
        return [to_model_input(v) for v in value]
    raise InvalidInputError(
        f"invalid input of type {type(value).__name__}: expected a string, an asset, a TransformResult or a list of them"
    )


@app.task(name=TRANSFORM_TASK, bind=True, base=TransformTask, max_retries=MAX_TRANSIENT_RETRIES,
          default_retry_delay=WORKER_LOST_RETRY_DELAY)
def transform(self: Task, input: Any, provider: str, model: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``input`` into an output asset with ``provider``'s ``model``; JSON TransformResult out."""
    request_args, request_kwargs = self.request.args, self.request.kwargs
    # result_extended stores the request's args in the backend: keep secrets out of it.
    self.request.args = redact(list(request_args or []))
    self.request.kwargs = redact(dict(request_kwargs or {}))
    started = time.perf_counter()
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(f"options must be a JSON object, got {type(options).__name__}")
    opts = dict(options or {})
    requested_cap = opts.pop("capability", None)
    if not isinstance(provider, str) or not provider:
        raise InvalidInputError(f"provider must be a URL string, got {provider!r}")
    if not isinstance(model, str) or not model:
        raise InvalidInputError(f"model must be a model id string, got {model!r}")
    model_input = to_model_input(input)
    loaded = get_registry().get(provider)
    try:
        runnable = loaded.provider.get_model(model)  # may discover models over HTTP: transient errors retry
        if isinstance(loaded.provider, DockerProvider):
            loaded.provider.ensure_service()
        output = runnable.transform(model_input, opts)
    except (TransientError, *TRANSIENT_EXCEPTIONS) as exc:
        countdown = backoff(self.request.retries, getattr(exc, "retry_after", None))
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
    result = TransformResult(
        asset=asset_ref(output),
        metadata=ResultMetadata(
            generation_prompt=output.metadata["generation_prompt"],
            provider=loaded.manifest.id,
            provider_url=provider,
            model=model,
            capability=str(cap) if cap else None,
            processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
            source=SourceInfo(**loaded.source),
            task_id=self.request.id,
            worker=self.request.hostname,
        ),
    )
    return result.model_dump(mode="json", exclude_none=True)
