"""Nothing needs Redis before it is used: the SDK's tests run without one, and importing any module of the
package opens no connection (arq's rule: settings passed explicitly, nothing connecting at import)."""

from __future__ import annotations

import os
import pkgutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from conftest import REPO, RUN_DIR

import mediaconduit_worker


class ConnectionRecorder:
    """A loopback port that accepts connections, remembers each, and closes it at once (a client fails fast)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(peer)
            conn.close()

    def connections(self) -> int:
        """How many connections were made so far, including any still waiting in the backlog."""
        self._stop.set()
        self._thread.join(5)
        self.sock.setblocking(False)
        while True:
            try:
                conn, peer = self.sock.accept()
            except BlockingIOError:
                return len(self.accepted)
            self.accepted.append(peer)
            conn.close()

    def close(self) -> None:
        self.connections()
        self.sock.close()


@pytest.fixture
def recorder() -> Iterator[ConnectionRecorder]:
    rec = ConnectionRecorder()
    yield rec
    rec.close()


def no_redis_environment(url: str) -> dict[str, str]:
    """This process's environment with the broker and the result backend at ``url``, no test Redis of
    one's own, and the suite's conftest forbidden to start one."""
    env = {k: v for k, v in os.environ.items() if k not in ("MEDIACONDUIT_TEST_BROKER_URL", "MEDIACONDUIT_RESULT_BACKEND")}
    env.update(MEDIACONDUIT_BROKER_URL=url, MEDIACONDUIT_RESULT_BACKEND=url, MEDIACONDUIT_TESTS_NO_REDIS="1",
               MEDIACONDUIT_HOME=str(RUN_DIR / "no-redis-home"))
    return env


def test_sdk_tests_pass_without_a_redis(recorder):
    """``tests/sdk`` with no Redis to start or reach: a test that asked for one would fail, and one that
    connected would show in the recorder."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/sdk", "-p", "no:cacheprovider"],
                          cwd=REPO, env=no_redis_environment(recorder.url), capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, f"tests/sdk failed without Redis:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout
    assert recorder.connections() == 0, f"tests/sdk connected to the broker URL {len(recorder.accepted)} times"


def package_modules() -> list[str]:
    """Every module of the package, except ``__main__`` ones (they run a command when imported)."""
    found = pkgutil.walk_packages(mediaconduit_worker.__path__, "mediaconduit_worker.")
    return sorted(["mediaconduit_worker", *(m.name for m in found if not m.name.endswith(".__main__"))])


IMPORT_ALL = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print("imported", len(sys.argv) - 1)
"""


def test_importing_any_module_connects_to_nothing(recorder):
    modules = package_modules()
    assert "mediaconduit_worker.worker.app" in modules and "mediaconduit_worker.celery_app" in modules
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL, *modules], env=no_redis_environment(recorder.url),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split() == ["imported", str(len(modules))]
    assert recorder.connections() == 0, f"importing the package connected to the broker URL {len(recorder.accepted)} times"


def test_the_recorder_sees_a_connection_from_such_a_process(recorder):
    """The control of the test above: the same environment, and a client that does connect, is seen."""
    probe = ("import redis, mediaconduit_worker.celery_app as c\n"
             "try:\n    redis.Redis.from_url(c.app.conf.broker_url, retry=None).ping()\n"
             "except redis.RedisError:\n    pass\n")
    proc = subprocess.run([sys.executable, "-c", probe], env=no_redis_environment(recorder.url),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert recorder.connections() >= 1
