"""Helpers for the remote-provider tests: a worker on a private queue, and running jobs on it.

Why a private queue: the session-wide ``text_worker`` (started by other modules) also serves
``text-to-text`` but has no stand-in URLs or keys in its environment; a job it took would fail.
A queue of our own keeps each job on the worker whose environment the test chose.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import REPO, RUN_DIR, publish

REMOTE_PROVIDERS = ["openrouter", "together", "xai", "openai", "anthropic", "ollama", "elevenlabs"]
KEY_VARS = ["OPENROUTER_API_KEY", "TOGETHER_API_KEY", "XAI_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
            "ELEVENLABS_API_KEY"]


def publish_remote_providers() -> dict[str, str]:
    """Each provider folder published as https://github.com/MediaConduit/<name>-provider."""
    return {name: publish(REPO / "providers" / f"{name}-provider", f"{name}-provider") for name in REMOTE_PROVIDERS}


class QueueWorker:
    """``celery worker -Q <queue>`` in its own process group with a chosen environment; log kept."""

    def __init__(self, queue: str, env: dict[str, str], drop: list[str] | None = None, concurrency: int = 2) -> None:
        self.queue = queue
        name = f"{queue}-{uuid.uuid4().hex[:6]}"
        self.log = Path(RUN_DIR) / f"{name}.log"
        self.hostname = f"{name}@{socket.gethostname()}"
        environ = {**os.environ, **env}
        for var in drop or []:
            environ.pop(var, None)
        cmd = [sys.executable, "-m", "celery", "-A", "mediaconduit_worker.celery_app", "worker", "-Q", queue,
               "-c", str(concurrency), "-n", self.hostname, "-l", "INFO"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=environ,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> QueueWorker:
        from mediaconduit_worker.celery_app import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_text()}")
            if app.control.ping(destination=[self.hostname], timeout=0.5):
                return self
        raise TimeoutError(f"worker {self.hostname} not ready:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def run(self, input: Any, provider: str, model: str, options: dict[str, Any] | None = None,
            timeout: float = 60) -> dict[str, Any]:
        """One transform through Redis to this worker; the TransformResult JSON (or the job's error)."""
        return self.submit(input, provider, model, options).get(timeout=timeout)

    def submit(self, input: Any, provider: str, model: str, options: dict[str, Any] | None = None) -> Any:
        from mediaconduit_worker import transform
        from mediaconduit_worker.celery_app import app

        try:
            return transform.apply_async((input, provider, model, options or {}), queue=self.queue)
        finally:
            # Celery adds an undeclared queue to the app's table on send; leave the table as other tests expect it.
            app.amqp.queues.pop(self.queue, None)

    def stop(self) -> None:
        from mediaconduit_worker.cli import stop_process

        stop_process(self.proc)
