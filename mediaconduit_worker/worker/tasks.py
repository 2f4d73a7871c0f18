"""The one task, ``mediaconduit.transform``: load provider, run model, return a TransformResult."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import Retry

from ..assets import job_input
from ..capabilities import parse_capability
from ..errors import InvalidInputError
from ..payload import check_json
from ..provenance import complete_record
from ..record import ResultMetadata, SourceInfo, TransformResult, scrub_exception, secret_values, strip_userinfo
from . import cache as result_cache
from .app import app
from .calls import BATCH_HEADER, serve_direct
from .deadlines import JobDeadline
from .failover import RouteRun
from .loader import get_registry
from .redaction import current_secrets
from .reliability import TRANSIENT_EXCEPTIONS, WORKER_LOST_RETRY_DELAY, CrashAwareRequest, backoff
from .replay import SERVICE_PIN_OPTION, pin_services, service_record
from .routes import is_route, route_for
from .routing import TRANSFORM_TASK, named_arguments

log = logging.getLogger(__name__)
#: Bounds transient retries and redeliveries after a lost worker process alike: Celery counts both
#: in ``request.retries``.
MAX_RETRIES = 5


class TransformTask(Task):
    """The transform's task class. The app's ``send_task`` checks each job before it is queued and
    redacts what events and logs show of it (see ``app.MediaConduitCelery``)."""

    #: Refuses jobs too large to run, shows redacted arguments, names a job that keeps crashing its
    #: worker process a poison job.
    Request = CrashAwareRequest

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        # Celery would stamp the producer's configured limits into the message; leave them to the worker
        # (MEDIACONDUIT_TASK_TIME_LIMIT where the job runs) unless this call sets its own.
        options.setdefault("time_limit", None)
        options.setdefault("soft_time_limit", None)
        return super().apply_async(args, kwargs, **options)


@app.task(name=TRANSFORM_TASK, bind=True, base=TransformTask, max_retries=MAX_RETRIES,
          default_retry_delay=WORKER_LOST_RETRY_DELAY)
def transform(self: Task, input: Any, provider: str, model: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``input`` into an output asset with ``provider``'s ``model``; JSON TransformResult out.

    Every error leaves with the job's secrets scrubbed (its options' secret values, the credentials in
    its provider URL): the FAILURE or RETRY stored, the log line and the retried message's error alike.
    """
    secrets = job_secrets(provider, options)
    shown = current_secrets.set(tuple(secrets))
    try:
        return _transform(self, input, provider, model, options)
    except Retry:
        raise
    except Exception as exc:
        failure = scrub_exception(exc, secrets)
        if failure is exc:
            raise
    finally:
        current_secrets.reset(shown)
    raise failure  # outside the handler: no implicit link back to the unscrubbed original


def job_secrets(provider: Any, options: Any) -> list[str]:
    """What must not be shown of a job: its options' secret values and its provider URL's credentials."""
    try:
        return secret_values([provider, options])
    except RecursionError:
        return []


def _transform(task: Task, input: Any, provider: str, model: str, options: dict[str, Any] | None) -> dict[str, Any]:
    started = time.perf_counter()
    request = task.request  # a thread-local lookup each time: read it once
    # A message from elsewhere (Flower, another language) skipped the producer's check; its size was
    # checked before it reached this process.
    check_json(named_arguments((input, provider, model, options), None))
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(f"options must be a JSON object, got {type(options).__name__}")
    opts = dict(options or {})
    requested_cap = opts.pop("capability", None)
    pin_services(opts.pop(SERVICE_PIN_OPTION, None))  # replay: this job's service at the recorded commit
    if not isinstance(provider, str) or not provider:
        raise InvalidInputError(f"provider must be a URL string, got {provider!r}")
    routed = is_route(provider)
    if not routed and (not isinstance(model, str) or not model):
        raise InvalidInputError(f"model must be a model id string, got {model!r}")
    model_input = job_input(input)
    batch = getattr(request, BATCH_HEADER, None)
    deadline = JobDeadline(task, request, provider, model)  # the hard time limit, held in every pool
    if (hit := result_cache.lookup(task, deadline, provider, model, opts, model_input, started)) is not None:
        return hit  # opt-in (options.cache or the manifest): no provider call
    retry_with: BaseException | None = None
    try:
        if routed:
            served = deadline.run(RouteRun(route_for(provider, model, options), model_input, opts, batch).serve)
        else:
            served = deadline.run(serve_direct, provider, model, model_input, opts, batch)
    except TRANSIENT_EXCEPTIONS as exc:
        retry_with = scrub_exception(exc, job_secrets(provider, options))
    if retry_with is not None:
        countdown = backoff(request.retries, getattr(retry_with, "retry_after", None))
        peeked = get_registry().peek(provider)
        who = peeked.manifest.id if peeked else strip_userinfo(provider)
        log.warning("transient error from %s/%s (%s); retry in %.1fs", who, model, retry_with, countdown)
        # Outside the handler, so the retry's traceback carries only the scrubbed error.
        raise task.retry(exc=retry_with, countdown=countdown, args=(input, provider, model, options), kwargs={})
    loaded, runnable, output, model = served.loaded, served.runnable, served.output, served.model
    if "generation_prompt" not in output.metadata:
        output.metadata["generation_prompt"] = runnable.generation_prompt(model_input, opts, started)
    cap = parse_capability(requested_cap) if isinstance(requested_cap, str) else None
    cap = cap or runnable.capability or loaded.manifest.capability_of(model)
    source = dict(loaded.source)
    source["url"] = strip_userinfo(str(source["url"]))
    shown_url = strip_userinfo(served.provider_url)
    output.metadata["generation_prompt"] = complete_record(
        output.metadata["generation_prompt"], input=model_input, output=output,
        provider_url=shown_url,
        source=source, capability=str(cap) if cap else None, service=service_record(loaded.provider))
    result = TransformResult.of(output, ResultMetadata(
        **served.route_metadata(),
        generation_prompt=output.metadata["generation_prompt"],
        provider=loaded.manifest.id,
        provider_url=shown_url,
        model=model,
        capability=str(cap) if cap else None,
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
        source=SourceInfo(**source),
        task_id=request.id,
        worker=request.hostname,
    ))
    return result_cache.store(task, served.result_json(result))
