"""Every private name of Celery, kombu, billiard, redis-py or CPython this package uses, in one table:
where, and what it buys (a measured saving, or a guarantee no public hook gives).

``tests/worker/test_internals.py`` fails, naming the entry, when an installed version no longer has one.
A name set on instances (``instance=True``) is looked for as ``self.<name>`` in its class's source.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Internal:
    name: str
    """``module:Class.attribute`` (or ``module:function``)."""
    used_by: str
    buys: str
    instance: bool = False


_TRANSPORT = "worker/transport.py"
_RECEIVE = ("the atomic receive (no job lost at any instant; kombu's BRPOP lost 1 job in 800 under kills, "
            "issue 23): kombu has no public hook for a channel's receive")

INTERNALS: tuple[Internal, ...] = (
    Internal("kombu.transport.redis:Channel._create_client", _TRANSPORT,
             "one Redis client per connection pool instead of one per command: redis-py 8 builds a client in "
             "about 90 us, several times per job (publish, events, ack); figure from when it was written, not "
             "re-measured in bench_instructions"),
    Internal("kombu.transport.redis:Channel._pool", _TRANSPORT,
             "an ack on a channel closed with its connection raises a connection error, not an AttributeError"),
    Internal("kombu.transport.redis:Channel._q_for_pri", _TRANSPORT, f"the list of a queue's priority step, for {_RECEIVE}"),
    Internal("kombu.transport.redis:Channel._on_connection_disconnect", _TRANSPORT,
             f"a lost receiver connection is sent its receive again, for {_RECEIVE}"),
    Internal("kombu.transport.redis:MultiChannelPoller._register", _TRANSPORT,
             f"polls each receiver connection's socket, for {_RECEIVE}"),
    Internal("kombu.transport.redis:MultiChannelPoller._register_LISTEN", _TRANSPORT, "fanout (remote control) as kombu polls it"),
    Internal("kombu.transport.redis:MultiChannelPoller._chan_to_sock", _TRANSPORT, f"which sockets are polled, for {_RECEIVE}",
             instance=True),
    Internal("kombu.transport.redis:MultiChannelPoller._fd_to_chan", _TRANSPORT, f"which channel a readable socket is, for {_RECEIVE}",
             instance=True),
    Internal("kombu.transport.redis:MultiChannelPoller._channels", _TRANSPORT, f"the channels to poll, for {_RECEIVE}",
             instance=True),
    Internal("kombu.transport.virtual.base:Transport._deliver", _TRANSPORT,
             f"hands a received message to its consumer, as kombu's own receive does, for {_RECEIVE}"),
    Internal("kombu.transport.virtual.base:QoS._delivered", _TRANSPORT,
             "cleared at close: the channel already handed back what it held", instance=True),
    Internal("kombu.transport.redis:Channel._put", _TRANSPORT,
             "a publish that waits for replicas (MEDIACONDUIT_WAIT_REPLICAS): its LPUSH and the WAIT on one "
             "connection; kombu has no public hook for a publish's write (unchanged when the setting is 0)"),
    Internal("kombu.transport.virtual.base:Channel._get_message_priority", _TRANSPORT,
             "the list a waiting publish writes to, as kombu's own publish picks it"),
    Internal("redis.connection:AbstractConnection._sock", _TRANSPORT,
             f"the socket of a receiver connection, to poll it (kombu reads it too), for {_RECEIVE}", instance=True),
)


def resolve(entry: Internal) -> object:
    """The named object; raises AttributeError or ImportError when the installed version lacks it."""
    module_name, _, path = entry.name.partition(":")
    obj: object = importlib.import_module(module_name)
    *owners, attr = path.split(".")
    for part in owners:
        obj = getattr(obj, part)
    if entry.instance:
        if f"self.{attr}" not in inspect.getsource(obj):  # type: ignore[arg-type]
            raise AttributeError(f"{entry.name}: no longer set on instances")
        return obj
    return getattr(obj, attr)
