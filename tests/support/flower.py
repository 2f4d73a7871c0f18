"""Flower started as users start it (``mediaconduit flower``), for the tests that talk to its API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from conftest import free_port


@contextmanager
def running_flower(auth: str) -> Iterator[tuple[str, int, int]]:
    """Flower on a free loopback port with basic auth ``user:password``; yields (base URL, port, pid)."""
    port = free_port()
    env = {**os.environ, "MEDIACONDUIT_FLOWER_AUTH": auth, "MEDIACONDUIT_FLOWER_PORT": str(port)}
    env.pop("FLOWER_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "mediaconduit_worker.cli", "flower"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthcheck", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"flower did not start: {proc.communicate()[0]}")
        time.sleep(0.2)
    try:
        yield base, port, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
