"""Hard time limits that hold in every pool.

Celery enforces a job's hard limit by killing a prefork child and, in a gevent pool, with
``gevent.Timeout``; a thread pool has nothing, so one hung call would hold its slot forever. Here a
job's provider calls run under its deadline (the hard limit, less a moment so our error, naming
provider and model, comes before the pool's own) in whichever way the pool allows:

* HTTP through the SDK: every request's timeout is cut to the time left (``mediaconduit_worker.deadline``);

and for code that blocks elsewhere, a backstop half that moment later (so an HTTP call ending at the
deadline reports itself first):

* prefork or solo (the job runs in its process's main thread): ``SIGALRM`` interrupts Python code;
* gevent: ``gevent.Timeout`` interrupts the greenlet at its next cooperative wait;
* threads: the call runs in a companion thread the pool thread waits for. Past the deadline the job
  fails and its slot is free; the companion is abandoned, counted (``mediaconduit status``) and asked to
  unwind at its next Python instruction. When ``MEDIACONDUIT_MAX_STUCK_THREADS`` are stuck at once the
  worker recycles itself: a warm shutdown, then the same command again in the same process.

The same three ways interrupt a job before its deadline (``interrupt_job``: a cancel, or a shutdown
handing its jobs back): ``JobInterrupted`` is raised into it, in a prefork child by ``INTERRUPT_SIGNAL``.
"""

from __future__ import annotations

import atexit
import contextvars
import ctypes
import itertools
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery import signals

from ..deadline import Deadline, use
from ..errors import TimeLimitError
from ..redaction import redact_url
from ..settings import get_settings
from .loader import get_registry

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Sent to a prefork pool child to interrupt the job it runs (SIGUSR1 is Celery's soft time limit).
INTERRUPT_SIGNAL = signal.SIGUSR2
#: Our error comes this long before the pool's own hard limit: 10 % of the limit, at most a second.
GRACE = 0.1
MAX_GRACE = 1.0


def job_time_limit(task: Any, request: Any) -> float | None:
    """The running job's limit: the lesser of its hard and soft limits, each the call's (``time_limit=``,
    ``soft_time_limit=``), else the task's, else the worker's settings (``MEDIACONDUIT_TASK_TIME_LIMIT``)."""
    limits = request.timelimit
    hard, soft = limits if isinstance(limits, list | tuple) and len(limits) == 2 else (None, None)
    if not (hard and soft):
        conf_hard, conf_soft = _configured_limits(task.app)
        hard = hard or task.time_limit or conf_hard
        soft = soft or task.soft_time_limit or conf_soft
    return min((float(x) for x in (hard, soft) if x), default=None)


def _configured_limits(app: Any) -> tuple[Any, Any]:
    """The app's ``task_time_limit`` and ``task_soft_time_limit``, read at its first job (its settings are
    final by then; a lookup in Celery's layered configuration costs microseconds each time)."""
    found: tuple[Any, Any] | None = getattr(app, "_mediaconduit_time_limits", None)
    if found is None:
        found = app._mediaconduit_time_limits = (app.conf.task_time_limit, app.conf.task_soft_time_limit)
    return found


class _JobsDeadline(Deadline):
    """A job's deadline whose errors name the provider by its manifest id once this process loaded it."""

    def __init__(self, at: float, limit: float, provider: str, model: str | None) -> None:
        super().__init__(at, limit, f"provider {redact_url(provider)!r} model {model!r}")
        self.provider, self.model = provider, model

    def error(self, during: str | None = None) -> TimeLimitError:
        loaded = get_registry().peek(self.provider)
        if loaded is not None:
            self.what = f"provider {loaded.manifest.id!r} model {self.model!r}"
        return super().error(during)


class JobInterrupted(BaseException):
    """Raised into a job's provider call to stop it now: it was cancelled, or its worker is shutting down
    and hands it back. A BaseException, so provider code's ``except Exception`` lets it by (and
    ``polling.poll_until`` cancels the remote job on its way out); the task body says what it means."""


class JobDeadline:
    """One job's deadline; ``run`` calls provider code under it in the way the current pool allows."""

    def __init__(self, task: Any, request: Any, provider: str, model: str | None) -> None:
        global _interrupt_pending
        _interrupt_pending = False  # a signal meant for the job before this one in this process
        self.limit = job_time_limit(task, request)
        self.task_id = request.id
        grace = min(GRACE * self.limit, MAX_GRACE) if self.limit else 0.0
        self.backstop = grace / 2
        self.deadline = None if self.limit is None else _JobsDeadline(
            time.monotonic() + self.limit - grace, self.limit, provider, model)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline.remaining()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        d = self.deadline
        if d is None:
            return fn(*args)
        with use(d):
            if d.remaining() <= 0:
                raise d.error()
            if _early.pop(self.task_id, None):
                raise JobInterrupted(self.task_id)
            if _gevent_patched():
                return _with_gevent_timeout(d, self.backstop, self.task_id, fn, args)
            if threading.current_thread() is threading.main_thread():
                return _with_alarm(d, self.backstop, fn, args)
            return _in_companion(d, self.backstop, self.task_id, fn, args)


# -- interrupting a running job --------------------------------------------------------------------------
#: In this process: how to interrupt each job running under its deadline in a thread or greenlet.
_running: dict[str | None, Callable[[], None]] = {}
#: Jobs asked to stop before their provider call began (bounded: a job may end without one).
_early: dict[str | None, bool] = {}
_EARLY_MAX = 1024
#: A prefork child (or solo) got ``INTERRUPT_SIGNAL`` between provider calls.
_interrupt_pending = False


def interrupt(task_id: str) -> None:
    """Interrupt a job running in this process's threads or greenlets (now, or when its call begins)."""
    waker = _running.get(task_id)
    if waker is not None:
        waker()
        return
    _early[task_id] = True
    while len(_early) > _EARLY_MAX:
        _early.pop(next(iter(_early)))


def interrupt_job(request: Any, pool: Any) -> None:
    """From the worker's main process: interrupt a job its pool runs (Celery's ``Request``). A prefork child
    is signalled; threads and greenlets are this process's own. A job the pool has not started yet (no
    child named) is signalled once it starts."""
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if not isinstance(pool, PreforkPool):
        interrupt(request.id)
        return
    if request.worker_pid:
        _signal_child(request.worker_pid)
        return
    def when_started(tries: int = 50) -> None:
        if request.worker_pid:
            _signal_child(request.worker_pid)
        elif tries and not request.acknowledged:
            threading.Timer(0.1, when_started, (tries - 1,)).start()
    when_started()


def _signal_child(pid: int) -> None:
    try:
        os.kill(pid, INTERRUPT_SIGNAL)
    except ProcessLookupError:
        pass  # the child ended with its job


def _on_interrupt(signum: int, frame: Any) -> None:
    global _interrupt_pending
    if _alarmed is not None:
        raise JobInterrupted()
    _interrupt_pending = True


@signals.worker_process_init.connect
def install_interrupt_handler(**_: Any) -> None:
    """In each prefork child (Celery's ``worker_process_init``): the interrupt signal raises into its job
    instead of killing the process."""
    signal.signal(INTERRUPT_SIGNAL, _on_interrupt)


def _gevent_patched() -> bool:
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


def _with_gevent_timeout(d: Deadline, backstop: float, task_id: str | None, fn: Callable[..., T],
                         args: tuple[Any, ...]) -> T:
    import gevent

    this = gevent.getcurrent()
    _running[task_id] = lambda: gevent.kill(this, JobInterrupted(task_id))
    # The timeout raises itself, and its error is made when it fires: made at entry, it would name the
    # provider by its URL, before the job's own call loaded it and learnt its manifest id.
    timer = gevent.Timeout(max(d.remaining() + backstop, 0.001))
    timer.start()
    try:
        return fn(*args)
    except gevent.Timeout as fired:
        if fired is not timer:
            raise
        raise d.error() from None
    finally:
        timer.close()
        _running.pop(task_id, None)


#: The deadline the process's main thread runs under; SIGALRM raises its error. The handler is installed
#: once per process, not per job (two ``sigaction`` calls and their enum conversions each time).
_alarmed: Deadline | None = None


def _on_alarm(signum: int, frame: Any) -> None:
    if _alarmed is not None:
        raise _alarmed.error()


def _with_alarm(d: Deadline, backstop: float, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    global _alarmed, _interrupt_pending
    if signal.getsignal(signal.SIGALRM) is not _on_alarm:  # installed late, or replaced by provider code
        signal.signal(signal.SIGALRM, _on_alarm)
    if _interrupt_pending:
        _interrupt_pending = False
        raise JobInterrupted()
    _alarmed = d
    signal.setitimer(signal.ITIMER_REAL, max(d.remaining() + backstop, 0.001))
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _alarmed = None


# -- thread pools: companions, abandoned when stuck -----------------------------------------------------
class _Abandoned(BaseException):
    """Raised into an abandoned companion (a BaseException, so provider code's ``except Exception`` lets it by)."""


class _Call:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.context = contextvars.copy_context()  # carries the job's deadline into the companion
        # Held until the call ends: a bare lock is the cheapest hand-back between two threads (an Event is
        # a Condition, a lock and a waiter lock each time), and the I/O pool does one per job.
        self.done = threading.Lock()
        self.done.acquire()
        self.finished = False
        self.interrupted = False
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.context.run(self.fn, *self.args)
        except BaseException as exc:
            self.error = exc
        finally:
            with _handover:
                self.finished = True
                if not self.interrupted:
                    self.done.release()

    def interrupt(self) -> None:
        """Wake the pool thread waiting for this call, which then walks away from it."""
        with _handover:
            if not (self.finished or self.interrupted):
                self.interrupted = True
                self.done.release()


#: Orders a call's end against its interruption, so exactly one of them wakes the pool thread.
_handover = threading.Lock()


class _Companion:
    """The thread that runs one pool thread's provider calls, so the pool thread can walk away from one."""

    _numbers = itertools.count(1)

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.abandoned = False
        self.thread = threading.Thread(target=self._serve, name=f"mediaconduit-job-{next(self._numbers)}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            while not self.abandoned:
                call = self.calls.get()
                if call is None:
                    break
                call.run()
        except _Abandoned:
            pass  # raised between calls: the unwinding it asked for is done
        finally:
            if self.abandoned:
                STUCK.release(self)


_companions = threading.local()


def _in_companion(d: Deadline, backstop: float, task_id: str | None, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    companion: _Companion | None = getattr(_companions, "current", None)
    if companion is None:
        companion = _companions.current = _Companion()
    call = _Call(fn, args)
    _running[task_id] = call.interrupt
    try:
        companion.calls.put(call)
        if not call.done.acquire(timeout=max(d.remaining() + backstop, 0.0)) and not call.finished:
            _companions.current = None
            STUCK.abandon(companion, task_id, d.what)
            raise d.error()
    finally:
        _running.pop(task_id, None)
    if call.interrupted and not call.finished:
        _companions.current = None
        STUCK.abandon(companion, task_id, d.what, why="was interrupted")
        raise JobInterrupted(task_id)
    if call.error is not None:
        raise call.error
    return call.value


class StuckThreads:
    """Companions abandoned past their job's deadline and still running, and the recycle they trigger."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alive: dict[_Companion, tuple[str | None, str, float]] = {}
        self.total = 0
        self.recycling = False

    def abandon(self, companion: _Companion, task_id: str | None, what: str,
                why: str = "is still running past its time limit") -> None:
        companion.abandoned = True
        companion.calls.put(None)  # if its call ends right now, it must not wait for another
        with self._lock:
            self._alive[companion] = (task_id, what, time.time())
            self.total += 1
            stuck = len(self._alive)
        log.error("job %s: %s %s; its thread %s is abandoned (%d stuck)",
                  task_id, what, why, companion.thread.name, stuck)
        if companion.thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(companion.thread.ident), ctypes.py_object(_Abandoned))
        limit = get_settings().max_stuck_threads
        if limit and stuck >= limit:
            self._recycle(stuck)

    def release(self, companion: _Companion) -> None:
        with self._lock:
            entry = self._alive.pop(companion, None)
        if entry is not None:
            log.info("abandoned thread %s (job %s) finally returned", companion.thread.name, entry[0])

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.time()
            return {"stuck": len(self._alive), "abandoned_total": self.total, "recycling": self.recycling,
                    "threads": [{"task_id": t, "what": w, "seconds": round(now - since, 1)}
                                for t, w, since in self._alive.values()]}

    def _recycle(self, stuck: int) -> None:
        """Warm shutdown (running jobs end by their deadlines), then the same command again in this
        process (``exec``: same pid for a supervisor, no stuck thread carried over)."""
        with self._lock:
            if self.recycling:
                return
            self.recycling = True
        log.error("%d threads are stuck past their jobs' time limits (MEDIACONDUIT_MAX_STUCK_THREADS); "
                  "recycling this worker", stuck)
        atexit.register(_exec_again)
        os.kill(os.getpid(), signal.SIGTERM)


def _exec_again() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


STUCK = StuckThreads()
