"""Step: a transient failure (HTTP 429/5xx, a connection blip, a budget held by jobs in flight) sends the
job back to the queue with backoff; anything else fails it. What counts as transient:
``reliability.TRANSIENT_EXCEPTIONS``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...redaction import redact_url, scrub_exception
from ..loader import get_registry
from ..reliability import TRANSIENT_EXCEPTIONS, backoff
from .run import Run

log = logging.getLogger(__name__)


def retry_transient(run: Run, proceed: Callable[[], None]) -> None:
    try:
        proceed()
        return
    except TRANSIENT_EXCEPTIONS as exc:
        retry_with = scrub_exception(exc, run.secrets)
    job = run.job
    countdown = backoff(run.request.retries, getattr(retry_with, "retry_after", None))
    peeked = get_registry().peek(job.provider)
    who = peeked.manifest.id if peeked else redact_url(job.provider)
    log.warning("transient error from %s/%s (%s); retry in %.1fs", who, job.model, retry_with, countdown)
    # Outside the handler, so the retry's traceback carries only the scrubbed error. The message goes
    # again as it came (its headers too: Celery keeps them).
    raise run.task.retry(exc=retry_with, countdown=countdown, args=run.args, kwargs={})
