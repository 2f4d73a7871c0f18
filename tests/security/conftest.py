"""The adversarial harness: canaries that must never leak, a loopback server that must never be hit,
and one worker on a private queue that every probe attacks and that must keep serving good jobs.

A probe is one line in ``probes.py``. What it attacks decides how it is sent (as a job's input,
provider URL, options, a provider repository's manifest or files, a service's compose file, a batch
line, or Flower's ``async-apply`` API). Each probe must end with an error naming its culprit (or, for
a secret handed to a model that works, succeed without showing it), touch no canary, make no request
to the loopback server, and leave the worker able to run a good job.
At the end of the session every Redis key and every worker log is scanned for the canaries.
"""

from __future__ import annotations

import hashlib
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


#: The attacked worker's job size cap: below the producer's default, so a job that passes the
#: producer's check shows what the worker does with a message from elsewhere (Flower, other languages).
WORKER_MAX_JOB_BYTES = 1024 * 1024
WORKER_MAX_INLINE_BYTES = 64 * 1024


def input_url_allow(recorder_url: str) -> str:
    """Input URL prefixes the attacked worker allows: the loopback recorder under many spellings, each of
    which must still be refused (loopback), and one host whose prefix a userinfo trick tries to borrow."""
    port = recorder_url.rsplit(":", 1)[1]
    hosts = ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f000001", "0.0.0.0", "[::1]", "[::ffff:127.0.0.1]"]
    return ",".join([f"http://{host}:{port}/" for host in hosts] + ["http://allowed.example.invalid"])


@pytest.fixture(scope="session")
def attacked_worker(canary_file: Path, echo_url: str, recorder: Recorder) -> Iterator[QueueWorker]:
    """The worker every probe attacks: allow-listed to the test mirrors, a canary in its environment,
    input URLs allowed towards the loopback recorder (which must stay unreachable all the same)."""
    worker = QueueWorker(f"security-{uuid.uuid4().hex[:6]}", {
        CANARY_ENV[0]: CANARY_ENV[1],
        "MEDIACONDUIT_PROVIDER_ALLOW": "https://github.com/MediaConduit/,https://github.com/tests/",
        "MEDIACONDUIT_INPUT_URL_ALLOW": input_url_allow(recorder.url),
        "MEDIACONDUIT_MAX_JOB_BYTES": str(WORKER_MAX_JOB_BYTES),
        "MEDIACONDUIT_MAX_INLINE_BYTES": str(WORKER_MAX_INLINE_BYTES),
    })
    worker.wait_ready()
    yield worker
    worker.stop()


#: A provider whose models mishandle their options the way real provider code does: one quotes them in
#: its exception, one in a retryable error, one logs them; the others succeed and return a digest of
#: the options they received (proof that the task got the real values, without showing them).
LEAKY_PROVIDER = """
import hashlib, json, logging, time
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, TransientError, input_text


class LeakyModel(TextToTextModel):
    def transform(self, input, options=None):
        opts = options or {}
        if self.id == "leak":
            raise RuntimeError(f"upstream rejected the request made with options {opts!r}")
        if self.id == "flaky":
            raise TransientError(f"rate limited; options were {opts}", retry_after=float(opts.get("wait", 0.2)))
        if self.id == "log":
            logging.getLogger("leaky").warning("calling upstream with %s", opts)
        if self.id == "slow":  # swallows a soft time limit, as careless code does: only the hard one ends it
            end = time.monotonic() + float(opts.get("seconds", 5))
            while time.monotonic() < end:
                try:
                    time.sleep(end - time.monotonic())
                except Exception:
                    pass
        digest = hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()
        return Text.from_string(f"{input_text(input)} options-sha256={digest}")


class LeakyProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: LeakyModel}
"""


def options_digest(options: dict[str, Any]) -> str:
    """What the leaky provider's succeeding models return for ``options``."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="session")
def leaky_url(publish_repo) -> str:
    models = "".join(f"  - {{id: {m}, capabilities: [text-to-text]}}\n" for m in ("leak", "flaky", "log", "slow", "ok"))
    return publish_repo("leaky-provider", {
        "MediaConduit.provider.yml": f"id: leaky\nname: Leaky\ntype: local\nmain: provider.py\n"
                                     f"exportName: LeakyProvider\nmodels:\n{models}",
        "provider.py": LEAKY_PROVIDER,
    })


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
