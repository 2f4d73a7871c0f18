"""A real Redis replication group for failover tests: a primary, replicas and three Sentinels, each a
``redis-server`` process of its own on loopback."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

MASTER = "mymaster"


def _free_port() -> int:
    with socket.socket() as s:  # not conftest's: the benchmarks use this group too
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, exe: str, folder: Path, name: str, args: list[str], config: str | None = None) -> None:
        self.exe, self.name, self.port = exe, name, _free_port()
        self.folder = folder / name
        self.folder.mkdir(parents=True)
        self.log = self.folder / "redis.log"
        self.args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", "",
                     "--appendonly", "no", "--logfile", str(self.log), *args]
        self.config = self.folder / "sentinel.conf" if config is not None else None
        if self.config is not None:
            self.config.write_text(config.replace("{port}", str(self.port)))
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        cmd = [self.exe, *([str(self.config)] if self.config else []), *self.args]
        if self.config:
            cmd.append("--sentinel")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.ping():
            assert time.monotonic() < deadline and self.proc.poll() is None, f"{self.name}: {self.log_text()[-2000:]}"
            time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class ReplicationGroup:
    """A primary, ``replicas`` replicas and three Sentinels watching it (quorum 2, down after 1 s)."""

    def __init__(self, folder: Path, replicas: int = 1) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("no redis-server on PATH for a Sentinel group (scripts/ci-setup.sh installs Debian's)")
        self.nodes = [Node(exe, folder, "primary", [])]
        primary = self.nodes[0].port
        self.nodes += [Node(exe, folder, f"replica{i}", ["--replicaof", "127.0.0.1", str(primary)])
                       for i in range(replicas)]
        config = (f"port {{port}}\nsentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
                  f"sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 5000\n"
                  f"sentinel parallel-syncs {MASTER} 1\n")
        self.sentinels = [Node(exe, folder, f"sentinel{i}", [], config=config) for i in range(3)]
        self.wait_until_watched(replicas)

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{s.port}/0" for s in self.sentinels)

    def master_port(self) -> int:
        for sentinel in self.sentinels:
            try:
                return int(sentinel.client().sentinel_get_master_addr_by_name(MASTER)[1])
            except (redis.RedisError, TypeError):
                continue
        raise AssertionError("no Sentinel names a master")

    def node_on(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def wait_until_watched(self, replicas: int, timeout: float = 30) -> None:
        """Every Sentinel knows the master, its replicas (in sync) and the other two Sentinels."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._watched(s.client(), replicas) for s in self.sentinels):
                    return
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "the Sentinels never saw the whole group:\n" + "\n".join(
                s.log_text()[-1500:] for s in self.sentinels)
            time.sleep(0.2)

    def _watched(self, client: redis.Redis, replicas: int) -> bool:
        seen: Any = client.execute_command("SENTINEL", "REPLICAS", MASTER)
        in_sync = [r for r in seen if "s_down" not in _flags(r) and _field(r, "master-link-status") == "ok"]
        others = client.execute_command("SENTINEL", "SENTINELS", MASTER)
        return len(in_sync) >= replicas and len(others) >= 2

    def wait_for_new_master(self, old: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while (port := self.master_port()) == old:
            assert time.monotonic() < deadline, "no replica was promoted:\n" + self.sentinels[0].log_text()[-3000:]
            time.sleep(0.1)
        return port

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()


def _field(entry: Any, name: str) -> Any:
    if isinstance(entry, dict):
        return entry.get(name)
    pairs = dict(zip(entry[::2], entry[1::2], strict=False))
    return pairs.get(name)


def _flags(entry: Any) -> str:
    return str(_field(entry, "flags") or "")
