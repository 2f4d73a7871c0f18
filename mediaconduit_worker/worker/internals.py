"""Every private name of Celery, kombu, billiard, redis-py or CPython this package uses, in one table:
where, and what it buys.

A private name is one with a leading underscore, a library global we change, or a name of a module Celery
documents only in its internals reference (``celery.worker.state``, ``celery.app.trace``, ...). Any of them
can change in a release without notice, so one is used only where it buys a guarantee no public hook
gives, or a saving of at least 1 % of a job's round trip measured with ``bench/bench_instructions.py``
(instructions per job with the use and without, beside raw Celery in the same run).

``tests/worker/test_internals.py`` holds the table true: it fails naming the entry and the installed
version when a library no longer has a listed name, and it reads every module of the package (imports and
attribute uses inside functions too) and fails naming each use of a private name that is not listed for
that module, and each listed use that is gone. A name set on instances (``instance=True``) is looked for
as ``self.<name>`` in its class's source.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Internal:
    name: str
    """``module:Class.attribute`` (or ``module:function``, ``module:global``)."""
    used_by: tuple[str, ...]
    """The modules that use it, relative to the package (``worker/transport.py``)."""
    buys: str
    """The guarantee no public hook gives, or the measured saving, against the public way."""
    instance: bool = False


_TRANSPORT = ("worker/transport.py",)
_RECEIVE = ("the atomic receive (no job lost at any instant; kombu's BRPOP lost 1 job in 800 under kills, "
            "issue 23): kombu has no public hook for a channel's receive")
#: What the worker's state module holds: Celery lists ``celery.worker.state`` only in its internals reference.
_STATE = "Celery's worker state (its internals reference; no public API tells a worker's running requests)"

INTERNALS: tuple[Internal, ...] = (
    # -- the broker transport (worker/transport.py) -------------------------------------------------
    Internal("kombu.transport:TRANSPORT_ALIASES", _TRANSPORT,
             "redis:// and rediss:// broker URLs load this transport, so every URL stays as it is. Changed, not "
             "private (kombu documents the table). kombu's public way, a 'module:Class' transport in Celery's "
             "broker_transport (kombu refuses one in the URL, kombu#2641), connects with the same URLs but "
             "makes Connection.as_uri() 'mediaconduit_worker.worker.transport:Transport://...': Celery's banner "
             "shows that and Flower's broker view raises NotImplementedError on the scheme (tried on kombu 5.7, "
             "flower 2); Celery has no setting to register a transport (celery#6890, open)"),
    Internal("kombu.transport.redis:Channel._create_client", _TRANSPORT,
             "the overridden client factory: an ack on a channel whose connection closed raises a connection "
             "error (Celery logs it, the lease hands the job back) instead of an AttributeError nothing "
             "handles, and one Redis client is kept per connection pool instead of one per publish, event and "
             "ack (redis-py 8 copies its response-callback table for each, about 90 us by timeit when the "
             "transport was written; not yet measured in bench_instructions, see the closing note of issue 22)"),
    Internal("kombu.transport.redis:Channel._pool", _TRANSPORT,
             "tells a channel closed with its connection (None) in the _create_client override above"),
    Internal("kombu.transport.redis:Channel._q_for_pri", _TRANSPORT, f"the list of a queue's priority step, for {_RECEIVE}"),
    Internal("kombu.transport.redis:Channel._on_connection_disconnect", _TRANSPORT,
             f"a lost receiver connection is sent its receive again, for {_RECEIVE}"),
    Internal("kombu.transport.redis:MultiChannelPoller._register", _TRANSPORT,
             f"polls each receiver connection's socket, for {_RECEIVE}"),
    Internal("kombu.transport.redis:MultiChannelPoller._register_LISTEN", _TRANSPORT,
             f"fanout (remote control) polled as kombu polls it, beside the receivers of {_RECEIVE}"),
    Internal("kombu.transport.redis:MultiChannelPoller._chan_to_sock", _TRANSPORT,
             f"which sockets are polled, for {_RECEIVE}", instance=True),
    Internal("kombu.transport.redis:MultiChannelPoller._fd_to_chan", _TRANSPORT,
             f"which channel a readable socket is, for {_RECEIVE}", instance=True),
    Internal("kombu.transport.redis:MultiChannelPoller._channels", _TRANSPORT,
             f"the channels to poll, for {_RECEIVE}", instance=True),
    Internal("kombu.transport.virtual.base:Transport._deliver", _TRANSPORT,
             f"hands a received message to its consumer, as kombu's own receive does, for {_RECEIVE}"),
    Internal("kombu.transport.virtual.base:QoS._delivered", _TRANSPORT,
             "cleared at close: the channel already handed back what it held (else kombu restores it twice)",
             instance=True),
    Internal("kombu.transport.redis:Channel._put", _TRANSPORT,
             "a publish that waits for replicas (MEDIACONDUIT_WAIT_REPLICAS): its LPUSH and the WAIT on one "
             "connection; kombu has no public hook for a publish's write (unchanged when the setting is 0)"),
    Internal("kombu.transport.virtual.base:Channel._get_message_priority", _TRANSPORT,
             "the list a waiting publish writes to, as kombu's own publish picks it"),
    Internal("redis.connection:AbstractConnection._sock", _TRANSPORT,
             f"the socket of a receiver connection, to poll it (kombu reads it too), for {_RECEIVE}", instance=True),
    # -- the worker's request and its state (Celery) ------------------------------------------------
    Internal("celery.worker.request:Request._already_revoked", ("worker/reliability.py",),
             "read and set by CrashAwareRequest.revoked: true once Celery itself, or this request, ended the job "
             "unrun (a revoke, a stored revoke, a job too large, a stopping worker), so it is never ended twice; "
             "no public attribute tells it. Not a speed claim"),
    Internal("celery.worker.state:task_ready", ("worker/reliability.py", "worker/revokes.py", "worker/shutdown.py"),
             f"{_STATE}: a job this package ends without running (refused, revoked from Redis, handed back by a "
             "stopping worker) leaves the worker's active and reserved sets, as Celery's own revoke does; "
             "else the prefetch credit and 'inspect active' count it for ever"),
    Internal("celery.worker.state:active_requests", ("worker/revokes.py", "worker/shutdown.py"),
             f"{_STATE}: the jobs running in this worker, to interrupt a cancelled one and, at the end of the "
             "shutdown grace, every one still running; Celery's own revoke(terminate=True) reads the same set"),
    Internal("celery.concurrency.prefork:TaskPool", ("worker/deadlines.py", "worker/shutdown.py"),
             "which pool runs a job (only Celery's internals reference lists the pool classes): a prefork child is "
             "signalled and, past the grace, killed; a thread or greenlet is interrupted in this process"),
    Internal("celery.worker.control:active", ("worker/status.py",),
             "Celery's own 'inspect active' answer inside the one mediaconduit_info reply, so 'mediaconduit "
             "status' costs one broadcast and one timeout instead of four (the command functions are in "
             "Celery's internals reference; the decorators that register commands are public)"),
    Internal("celery.worker.control:active_queues", ("worker/status.py",),
             "Celery's own 'inspect active_queues' answer inside the one mediaconduit_info reply (as active)"),
    Internal("celery.worker.control:stats", ("worker/status.py",),
             "Celery's own 'inspect stats' answer inside the one mediaconduit_info reply (as active)"),
    Internal("celery.utils.saferepr:saferepr", ("worker/redaction.py", "worker/reliability.py"),
             "Celery's bounded repr of any object, the one its own events and logs use: a refused job's "
             "task-failed event, and what events show of a value that is not JSON (a message from elsewhere)"),
    Internal("celery.utils.functional:maybe_list", ("worker/revokes.py",),
             "revoke's task_id argument read as Celery's own Control.revoke reads it (one id, a list, a tuple "
             "or None), so the persistent revoke takes exactly what Celery's does"),
    Internal("celery.app.trace:saferepr", ("worker/internals.py",),
             "replaced by redaction.shown (show_task_results_with, at worker start): Celery's tracer reprs each "
             "result with it for the task-succeeded event and the log line and has no setting for another "
             "repr. shown gives a result record's summary (what served, what came out) as JSON a client can parse "
             "(Flower's task page and /api/tasks), cut; saferepr gives Python's repr of the whole record. "
             "Saves 1244k instructions per echo job in the pool process (bench_instructions' traced run, callgrind, "
             "200 jobs: 3208k with shown, 4452k with Celery's saferepr; raw Celery 1980k), 14 % of raw Celery's "
             "8635k round trip"),
)


def show_task_results_with(repr_fn: Callable[..., str]) -> None:
    """Celery's tracer shows each task's result with ``repr_fn`` (``saferepr``'s signature) instead of
    ``saferepr``: it looks the name up in its module when each task ends."""
    from celery.app import trace

    trace.saferepr = repr_fn


def resolve(entry: Internal) -> object:
    """The named object; raises AttributeError or ImportError when the installed version lacks it."""
    module_name, _, path = entry.name.partition(":")
    obj: Any = importlib.import_module(module_name)
    *owners, attr = path.split(".")
    for part in owners:
        obj = getattr(obj, part)
    if entry.instance:
        if not any(f"self.{attr}" in inspect.getsource(cls) for cls in obj.__mro__ if cls is not object):
            raise AttributeError(f"{entry.name}: no longer set on instances")
        return obj
    return getattr(obj, attr)
