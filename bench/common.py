"""Shared by the benchmark scripts: a private Redis and worker processes, figures printed plainly."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def isolated_environment() -> Path:
    """A fresh MEDIACONDUIT_HOME and embedded Redis on a free port; must run before app imports."""
    home = Path(tempfile.mkdtemp(prefix="mediaconduit-bench-"))
    os.environ["MEDIACONDUIT_HOME"] = str(home)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from mediaconduit_worker.worker.broker import EmbeddedRedis

    redis = EmbeddedRedis(home, port)
    os.environ["MEDIACONDUIT_BROKER_URL"] = redis.ensure_started()
    import atexit

    atexit.register(redis.stop)
    return home


def start_celery(app_module: str, queue: str, concurrency: int = 2, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    """A worker process; ``app_module`` is a Celery -A argument, ``extra`` more arguments (``["-P", "threads"]``)."""
    cmd = [sys.executable, "-m", "celery", "-q", "-A", app_module, "worker", "-Q", queue, "-c", str(concurrency),
           "-n", f"{queue}-bench@%h", "-l", "WARNING", *(extra or [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")])}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.status import wait_for_workers

    wait_for_workers(app, destination=[f"{queue}-bench@{socket.gethostname()}"], alive=lambda: proc.poll() is None)
    return proc


def rss_mb(pid: int) -> float:
    """Resident memory of a worker: its main process plus its pool children."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total_kb = 0
    for p in [str(pid), *children]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total_kb / 1024


def throughput(send, count: int) -> float:
    """Jobs per second with ``count`` jobs queued at once, from the first send to the last result."""
    t = time.perf_counter()
    pending = [send() for _ in range(count)]
    for p in pending:
        p.get(timeout=300)
    return count / (time.perf_counter() - t)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def row(label: str, value: float, unit: str, target: str = "") -> None:
    print(f"  {label:<48} {value:>10.2f} {unit:<7} {target}")
