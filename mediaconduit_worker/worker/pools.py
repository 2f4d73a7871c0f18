"""Which Celery pool serves which queue, and how one ``mediaconduit worker`` command runs them.

A remote provider's job spends its time waiting on an API (an LLM answers in seconds), so a process
per slot wastes memory and caps a 2-core machine at a few jobs in flight. Those queues run in an
*I/O pool*: threads (or gevent greenlets), 128 slots by default. Providers that run an engine on
this machine (Pillow in the worker process; espeak, whisper, tesseract in a local container) are
CPU-bound: more slots than cores add memory, not speed, so their queues run *prefork*, one process
per core, where a hard time limit can kill a stuck process.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from ..capabilities import MediaCapability

POOLS = ("prefork", "threads", "gevent")
IO_POOLS = frozenset({"threads", "gevent"})
#: Slots of an I/O pool: 128 requests in flight at ~0.5-5 s each keep one core busy with Celery's own work.
IO_CONCURRENCY = 128
#: Capabilities whose providers are remote APIs in this repository (OpenRouter, OpenAI, Anthropic, X.AI,
#: Together, Ollama). The media capabilities have local engines; ``--pool`` overrides either choice.
IO_CAPABILITIES = frozenset({MediaCapability.TEXT_TO_TEXT.value})


@dataclass(frozen=True)
class PoolPlan:
    """One Celery worker: its pool, the queues it serves and its slots (None: Celery's default)."""

    pool: str
    queues: tuple[str, ...]
    concurrency: int | None

    def argv(self, loglevel: str, name: str | None) -> list[str]:
        """``celery worker`` arguments (without the leading ``worker``)."""
        argv = ["-P", self.pool, "-Q", ",".join(self.queues), "-l", loglevel,
                "-n", name or f"{'+'.join(self.queues[:3])}@%h"]
        if self.concurrency:
            argv += ["-c", str(self.concurrency)]
        return argv


def default_pool(queue: str) -> str:
    return "threads" if queue in IO_CAPABILITIES else "prefork"


def plan_pools(queues: list[str], default_queue: str | None, pool: str | None, concurrency: int | None) -> list[PoolPlan]:
    """One plan with ``pool`` if given; else one per kind of work, the default queue (jobs whose
    capability nobody could tell) going to the prefork pool, where a hard time limit kills a process."""
    def slots(kind: str) -> int | None:
        return concurrency or (IO_CONCURRENCY if kind in IO_POOLS else None)

    if pool is not None:
        return [PoolPlan(pool, tuple(queues + ([default_queue] if default_queue else [])), slots(pool))]
    kinds: dict[str, list[str]] = {}
    for q in queues:
        kinds.setdefault(default_pool(q), []).append(q)
    if default_queue:
        kinds.setdefault("prefork" if "prefork" in kinds or not kinds else next(iter(kinds)), []).append(default_queue)
    return [PoolPlan(kind, tuple(qs), slots(kind)) for kind, qs in kinds.items()]


def node_name(name: str | None, plan: PoolPlan, split: bool) -> str | None:
    """``-n`` for one plan: a given name gets the pool as a suffix when one command runs two pools."""
    if name is None or not split:
        return name
    local, sep, host = name.partition("@")
    return f"{local}-{plan.pool}{sep}{host}"


def require_gevent() -> None:
    if importlib.util.find_spec("gevent") is None:
        raise RuntimeError("the gevent pool needs gevent: pip install 'mediaconduit-worker[gevent]'")


def exec_celery(argv: list[str]) -> None:
    """Replace this process with ``python -m celery … worker``: Celery's entry point applies gevent's
    monkey patches before anything else is imported, which a running CLI can no longer do."""
    require_gevent()
    cmd = [sys.executable, "-m", "celery", "-A", "mediaconduit_worker.celery_app", "worker", *argv]
    os.execv(sys.executable, cmd)


def run_split(children: list[list[str]]) -> int:
    """Run each ``mediaconduit worker …`` argv as a child and pass each signal on once; when one child exits
    the others are stopped warmly, so a supervisor sees the whole command end (and restarts it).

    Children get their own process group (a terminal's Ctrl-C or a group kill reaches only this process,
    which forwards it, so no child gets a second, killing, signal) and die with this process on Linux.
    """
    procs = [subprocess.Popen([sys.executable, "-m", "mediaconduit_worker.cli", "worker", *argv],
                              preexec_fn=_detach_but_die_with_parent) for argv in children]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or signum != signal.SIGHUP  # SIGHUP restarts a Celery worker in place
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        if not stopping:
            forward(signal.SIGTERM, None)
        for p in procs:
            p.wait()
    code = next((p.returncode for p in procs if p.returncode), 0)
    return 128 - code if code < 0 else code


def _detach_but_die_with_parent() -> None:
    os.setpgrp()
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
