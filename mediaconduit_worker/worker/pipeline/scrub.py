"""Step: the job's secrets never leave in an error, a log line or a retried message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.exceptions import Retry

from ...redaction import scrub_exception, secret_values
from ..redaction import current_secrets
from .run import Run


def job_secrets(provider: Any, options: Any) -> tuple[str, ...]:
    """What must not be shown of a job: its options' secret values and its provider URL's credentials."""
    try:
        return tuple(secret_values([provider, options]))
    except RecursionError:
        return ()


def scrub_secrets(run: Run, proceed: Callable[[], None]) -> None:
    """Outermost: every error leaves with the job's secrets scrubbed (the FAILURE stored, the log line and
    a retried message's error alike), and the worker's log filter hides them while the job runs."""
    run.secrets = job_secrets(run.args[1], run.args[3])
    shown = current_secrets.set(run.secrets)
    try:
        proceed()
        return
    except Retry:
        raise
    except Exception as exc:
        failure = scrub_exception(exc, run.secrets)
        if failure is exc:
            raise
    finally:
        current_secrets.reset(shown)
    raise failure  # outside the handler: no implicit link back to the unscrubbed original
