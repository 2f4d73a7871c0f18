"""Helpers for the remote-provider tests: a worker on a private queue, and running jobs on it.

Why a private queue: the session-wide ``text_worker`` (started by other modules) also serves
``text-to-text`` but has no stand-in URLs or keys in its environment; a job it took would fail.
A queue of our own keeps each job on the worker whose environment the test chose.
"""

from __future__ import annotations

from typing import Any

from conftest import REPO, WorkerProcess, publish

REMOTE_PROVIDERS = ["openrouter", "together", "xai", "openai", "anthropic", "ollama", "elevenlabs"]
KEY_VARS = ["OPENROUTER_API_KEY", "TOGETHER_API_KEY", "XAI_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
            "ELEVENLABS_API_KEY"]


def publish_remote_providers() -> dict[str, str]:
    """Each provider folder published as https://github.com/MediaConduit/<name>-provider."""
    return {name: publish(REPO / "providers" / f"{name}-provider", f"{name}-provider") for name in REMOTE_PROVIDERS}


class QueueWorker(WorkerProcess):
    """A worker on a private queue with a chosen environment, and jobs sent to that queue."""

    def __init__(self, queue: str, env: dict[str, str], drop: list[str] | None = None, concurrency: int = 2,
                 pool: str = "prefork", args: list[str] | None = None) -> None:
        super().__init__(concurrency=concurrency, env=env, queue=queue, drop=drop, pool=pool, args=args)
        self.queue = queue

    def run(self, input: Any, provider: str, model: str, options: dict[str, Any] | None = None,
            timeout: float = 60) -> dict[str, Any]:
        """One transform through Redis to this worker; the TransformResult JSON (or the job's error)."""
        return self.submit(input, provider, model, options).get(timeout=timeout)

    def submit(self, input: Any, provider: str, model: str, options: dict[str, Any] | None = None, **call: Any) -> Any:
        """``call``: further ``apply_async`` options (e.g. ``time_limit``)."""
        from mediaconduit_worker import transform
        from mediaconduit_worker.celery_app import app

        try:
            return transform.apply_async((input, provider, model, options or {}), queue=self.queue, **call)
        finally:
            # Celery adds an undeclared queue to the app's table on send; leave the table as other tests expect it.
            app.amqp.queues.pop(self.queue, None)
