"""The adversarial harness: canaries that must never leak, a loopback server that must never be hit,
and one worker on a private queue that every probe attacks and that must keep serving good jobs.

A probe is one line in ``probes.py``. What it attacks decides how it is sent (as a job's input,
provider URL, options, a provider repository's manifest or files, a service's compose file, a batch
line, or Flower's ``async-apply`` API). Each probe must end with an error naming its culprit, touch
no canary, make no request to the loopback server, and leave the worker able to run a good job.
At the end of the session every Redis key and every worker log is scanned for the canaries.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import RUN_DIR, publish
from support.remote import QueueWorker

from .probes import Link

#: Unique content of a file on the worker's disk that no job may read.
CANARY_FILE_TEXT = f"CANARY-FILE-{uuid.uuid4().hex}"
CANARY_FILE = RUN_DIR / "canary" / "secret.txt"
#: A secret in the worker's environment (it would show through /proc/self/environ).
CANARY_ENV = ("MEDIACONDUIT_CANARY_TOKEN", f"sk-canaryenv{uuid.uuid4().hex}")
#: A secret a probe passes in its options: it must be redacted everywhere.
CANARY_OPTION = f"sk-canaryopt{uuid.uuid4().hex}"
CANARIES = [CANARY_FILE_TEXT, CANARY_ENV[1], CANARY_OPTION]


class Recorder:
    """A loopback HTTP server that answers every request with the file canary, and remembers it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                recorder.hits.append(f"{self.command} {self.path}")
                body = CANARY_FILE_TEXT.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="session")
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.server.shutdown()


@pytest.fixture(scope="session")
def canary_file() -> Path:
    CANARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    CANARY_FILE.write_text(CANARY_FILE_TEXT)
    return CANARY_FILE


@pytest.fixture(scope="session")
def attacked_worker(canary_file: Path, echo_url: str) -> Iterator[QueueWorker]:
    """The worker every probe attacks: allow-listed to the test mirrors, a canary in its environment."""
    worker = QueueWorker(f"security-{uuid.uuid4().hex[:6]}", {
        CANARY_ENV[0]: CANARY_ENV[1],
        "MEDIACONDUIT_PROVIDER_ALLOW": "https://github.com/MediaConduit/,https://github.com/tests/",
    })
    worker.wait_ready()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def publish_repo(tmp_path_factory: pytest.TempPathFactory):
    """Publish a repository from ``{path: text or Link}`` under https://github.com/tests/…; returns its URL."""

    def make(name: str, files: dict[str, str | bytes | Link]) -> str:
        folder = tmp_path_factory.mktemp(name)
        for rel, content in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Link):
                path.symlink_to(content.target)
            else:
                path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return publish(folder, f"{name}-{uuid.uuid4().hex[:6]}", org="tests")

    return make


def leaked(text: str) -> list[str]:
    """The canaries that appear in ``text``."""
    return [c for c in CANARIES if c in text]


@pytest.fixture(scope="session", autouse=True)
def no_canary_anywhere() -> Iterator[None]:
    """After every probe ran: no Redis key (broker and backend) and no worker log holds a canary."""
    yield
    from mediaconduit_worker.celery_app import app

    client = app.backend.client
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key)]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = list(client.hgetall(key).values())
        elif kind in ("set", "zset"):
            values = list(client.smembers(key)) if kind == "set" else client.zrange(key, 0, -1)
        else:
            continue
        for value in values:
            text = value.decode(errors="replace") if isinstance(value, bytes) else json.dumps(value)
            found += [f"redis key {key.decode()}: {c[:16]}…" for c in leaked(text)]
    for log in sorted(RUN_DIR.glob("security-*.log")):
        found += [f"{log.name}: {c[:16]}…" for c in leaked(log.read_text(errors="replace"))]
    assert not found, "canaries leaked:\n" + "\n".join(found)
