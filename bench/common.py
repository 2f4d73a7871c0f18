"""Shared by the benchmark scripts: a private Redis and worker processes, figures printed plainly."""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def git_mirror(provider: str) -> str:
    """A local bare git mirror of ``providers/<provider>``, as the ``file://`` URL a job names."""
    mirror = Path(tempfile.mkdtemp(prefix="mc-mirror-")) / f"{provider}.git"
    work = mirror.parent / "work"
    shutil.copytree(REPO / "providers" / provider, work)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@invalid"]
    subprocess.run([*git, "init", "-q"], cwd=work, check=True)
    subprocess.run([*git, "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], cwd=work, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(mirror)], check=True)
    return f"file://{mirror}"


#: The two jobs every comparison sends: a raw Celery task's queue and the echo transform's capability.
RAW_QUEUE, ECHO_QUEUE = "raw-bench", "text-to-text"


def senders(url: str) -> dict[str, Any]:
    """Send one job each: ``raw`` (the yardstick task) and ``echo`` (the echo provider at ``url``)."""
    from celery import signature

    from mediaconduit_worker import transform

    raw = signature("bench.raw", args=("hello",), queue=RAW_QUEUE)
    return {"raw": raw.apply_async, "echo": lambda: transform.delay("hello", url, "echo")}


def start_celery(app_module: str, queue: str, concurrency: int = 2, extra: list[str] | None = None,
                 name: str | None = None, prefix: list[str] | None = None,
                 timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A worker process; ``app_module`` is a Celery -A argument, ``extra`` more arguments (``["-P", "threads"]``),
    ``prefix`` a command to run it under (valgrind), ``timeout`` how long it may take to answer a ping, ``env``
    settings of its own. It runs in this repository, which ``python -m`` puts first on its path, so it imports
    this checkout's package."""
    name = name or f"{queue}-bench"
    cmd = [*(prefix or []), sys.executable, "-m", "celery", "-q", "-A", app_module, "worker", "-Q", queue,
           "-c", str(concurrency), "-n", f"{name}@%h", "-l", "WARNING", *(extra or [])]
    environ = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")])}
    proc = subprocess.Popen(cmd, cwd=REPO, env=environ, start_new_session=True)
    _wait_for([f"{name}@{socket.gethostname()}"], proc, timeout)
    return proc


def start_io_pool(capability: str) -> subprocess.Popen[bytes]:
    """``mediaconduit worker --capability <capability>`` with its default pool, as a deployment starts it;
    returns the command's process (its worker processes are its children)."""
    from mediaconduit_worker.worker.pools import node_names, plan_pools

    cmd = [sys.executable, "-m", "mediaconduit_worker.cli", "worker", "--capability", capability,
           "--no-default-queue", "-l", "WARNING", "-n", "io-bench@%h"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    names = [n for ns in node_names("io-bench@%h", plan_pools([capability], None, None, None)) for n in ns]
    _wait_for([n.replace("%h", socket.gethostname()) for n in names], proc)
    return proc


def _wait_for(nodes: list[str], proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.status import wait_for_workers

    wait_for_workers(app, destination=nodes, timeout=timeout, alive=lambda: proc.poll() is None)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """The CLI's warm stop (SIGTERM to the process group, SIGKILL after ``timeout``), imported only once
    ``isolated_environment`` has set up the settings it reads."""
    from mediaconduit_worker.cli.worker import stop_process as stop

    stop(proc, timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(port: int, metrics_port: int | None = None, env: dict[str, str] | None = None,
                  log: Path | None = None) -> subprocess.Popen[bytes]:
    """``mediaconduit gateway --port PORT`` once it answers ``/openapi.json``; ``env`` settings of its own,
    ``log`` a file for its output (kept for the error when it does not come up)."""
    import httpx

    cmd = [sys.executable, "-m", "mediaconduit_worker.cli", "gateway", "--port", str(port), "--log-level", "warning"]
    if metrics_port is not None:
        cmd += ["--metrics-port", str(metrics_port)]
    out = open(log, "wb") if log else None
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT if out else None,
                            start_new_session=True)
    end = time.monotonic() + 60
    while time.monotonic() < end and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_process(proc)
    shown = f"; its log: {log}" if log else ""
    raise SystemExit(f"error: the gateway on port {port} did not answer within 60 s{shown}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) used so far by a worker: its process and every process under it."""
    total, todo = 0, [str(pid)]
    while todo:
        p = todo.pop()
        todo += subprocess.run(["pgrep", "-P", p], capture_output=True, text=True).stdout.split()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a worker: its process and every process under it (pool children, and the
    worker processes of a ``mediaconduit worker`` command)."""
    total_kb, todo = 0, [str(pid)]
    while todo:
        p = todo.pop()
        todo += subprocess.run(["pgrep", "-P", p], capture_output=True, text=True).stdout.split()
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


def round_trips(send, count: int) -> tuple[float, float]:
    """p50 and p99 (ms) of ``count`` sequential send-and-wait round trips, after a warm-up."""
    for _ in range(20):
        send().get(timeout=60)  # warm up: provider loaded, connections open
    times = []
    for _ in range(count):
        t = time.perf_counter()
        send().get(timeout=60)
        times.append((time.perf_counter() - t) * 1000)
    return percentile(times, 50), percentile(times, 99)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def row(label: str, value: float, unit: str, target: str = "") -> None:
    print(f"  {label:<48} {value:>10.2f} {unit:<7} {target}")


def callgrind(out_file: Path | str) -> list[str]:
    """The command prefix that counts a process's instructions into ``out_file`` (``%p``: its pid)."""
    return ["valgrind", "--tool=callgrind", "--log-file=/dev/null", f"--callgrind-out-file={out_file}"]


def callgrind_total(out: Path) -> int:
    """The instructions a callgrind output file counted."""
    found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
    if not found:
        raise RuntimeError(f"{out}: no instruction total")
    return int(found.group(1))


def count_calls(script: str, name: str, calls: int, url: str) -> int:
    """Instructions of ``script --measure name --calls N --url URL`` under callgrind (a part's or a step's
    ``calls`` calls on the echo job at ``url``)."""
    out = Path(tempfile.mkdtemp(prefix="mc-callgrind-")) / name
    done = subprocess.run([*callgrind(out), sys.executable, script, "--measure", name, "--calls", str(calls),
                           "--url", url], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} x{calls} failed:\n{done.stderr[-3000:]}")
    return callgrind_total(out)
