"""Which Celery pool serves which queue, and how one ``mediaconduit worker`` command runs them.

A remote provider's job spends its time waiting on an API (an LLM answers in seconds), so a process
per slot wastes memory and caps a 2-core machine at a few jobs in flight. Those queues run in an
*I/O pool*: threads (or gevent greenlets), 128 slots by default, shared among one process per core:
a Python process runs on one core at a time, and at ~100 jobs/s Celery's own per-job work fills it.
Providers that run an engine on this machine (Pillow in the worker process; espeak, whisper,
tesseract in a local container) are CPU-bound: more slots than cores add memory, not speed, so their
queues run *prefork*, one process per core, where a hard time limit can kill a stuck process.
"""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from ..capabilities import MediaCapability

POOLS = ("prefork", "threads", "gevent")
IO_POOLS = frozenset({"threads", "gevent"})
#: Slots of an I/O pool, shared by its processes: 128 requests in flight at ~0.5-5 s each.
IO_CONCURRENCY = 128
#: Processes of an I/O pool: one per core this process may run on.
IO_PROCESSES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
#: Capabilities whose providers are remote APIs in this repository (OpenRouter, OpenAI, Anthropic, X.AI,
#: Together, Ollama). The media capabilities have local engines; ``--pool`` overrides either choice.
IO_CAPABILITIES = frozenset({MediaCapability.TEXT_TO_TEXT.value})


@dataclass(frozen=True)
class PoolPlan:
    """One pool: its kind, the queues it serves, its slots (None: Celery's default) and, for an I/O
    pool, how many worker processes share those slots."""

    pool: str
    queues: tuple[str, ...]
    concurrency: int | None
    processes: int = 1

    def per_process(self) -> list[PoolPlan]:
        """The Celery workers that run this pool: one per process, the slots divided among them."""
        if self.processes == 1:
            return [self]
        share = math.ceil(self.concurrency / self.processes) if self.concurrency else None
        return [PoolPlan(self.pool, self.queues, share)] * self.processes

    def argv(self, loglevel: str, name: str) -> list[str]:
        """``celery worker`` arguments (without the leading ``worker``) for a plan of one process."""
        argv = ["-P", self.pool, "-Q", ",".join(self.queues), "-l", loglevel, "-n", name]
        if self.concurrency:
            argv += ["-c", str(self.concurrency)]
        return argv


def default_pool(queue: str) -> str:
    return "threads" if queue in IO_CAPABILITIES else "prefork"


def plan_pools(queues: list[str], default_queue: str | None, pool: str | None, concurrency: int | None,
               processes: int | None = None) -> list[PoolPlan]:
    """One plan with ``pool`` if given; else one per kind of work, the default queue (jobs whose
    capability nobody could tell) going to the prefork pool, where a hard time limit kills a process.
    ``concurrency`` is each pool's slots; ``processes`` those of an I/O pool (prefork's are its slots)."""
    def plan(kind: str, qs: list[str]) -> PoolPlan:
        if kind not in IO_POOLS:
            return PoolPlan(kind, tuple(qs), concurrency)
        slots = concurrency or IO_CONCURRENCY
        return PoolPlan(kind, tuple(qs), slots, min(processes or IO_PROCESSES, slots))

    if pool is not None:
        return [plan(pool, queues + ([default_queue] if default_queue else []))]
    kinds: dict[str, list[str]] = {}
    for q in queues:
        kinds.setdefault(default_pool(q), []).append(q)
    if default_queue:
        kinds.setdefault("prefork" if "prefork" in kinds or not kinds else next(iter(kinds)), []).append(default_queue)
    return [plan(kind, qs) for kind, qs in kinds.items()]


def node_names(name: str | None, plans: list[PoolPlan]) -> list[list[str]]:
    """``-n`` of each process of each plan. A given name is kept when one process runs it all, gets the
    pool as a suffix when the command runs two pools, and a number when a pool runs several processes;
    without one, each pool is named for its queues (``text-to-text@%h``)."""
    names = []
    for plan in plans:
        if name is None:
            base, host = "+".join(plan.queues[:3]), "@%h"
        else:
            local, sep, rest = name.partition("@")
            base, host = (f"{local}-{plan.pool}" if len(plans) > 1 else local), sep + rest
        names.append([f"{base}{host}"] if plan.processes == 1 else
                     [f"{base}-{i}{host}" for i in range(1, plan.processes + 1)])
    return names


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
