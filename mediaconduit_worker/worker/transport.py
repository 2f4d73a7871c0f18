"""The broker transport: kombu's Redis transport with a receive that cannot lose a message.

kombu takes a message with ``BRPOP`` and records it as unacknowledged in a second command (a
``MULTI``/``ZADD``/``HSET``/``EXEC``). A worker killed, or a Redis stopped, between the two loses that
message: it has left the queue and is in no table (celery/kombu#305). Here a message is never anywhere
but in Redis: each source list a channel consumes gets a connection of its own, blocked in
``BLMOVE source inflight RIGHT LEFT`` (one atomic command: the message moves from the queue into this
consumer's in-flight list, ``consumers.inflight_key``), and the acknowledgement is one ``LREM`` of it.
Whoever dies at whatever instant, the message is in the queue or in a consumer's in-flight list.

Which consumers are alive is proved by leases (``consumers.py``): a dead consumer's in-flight lists go
back to the front of their queues within ``MEDIACONDUIT_WORKER_LEASE`` (15 s) and a third; a live one
keeps its jobs however long they run, so the visibility timeout no longer redelivers anything (it is
still swept, for the ``unacked`` table of workers of an older version during an upgrade).

Options measured (Redis commands per job, ``INFO commandstats``, ``bench/bench_transport.py``):

- kombu's stock receive: ``BRPOP`` + ``MULTI ZADD HSET EXEC`` to take, ``MULTI ZREM HDEL EXEC`` to ack;
  the loss window above.
- ``BLMOVE`` into a per-consumer list (this module): one command to take, one to ack, no window. Redis
  has no ``BLMOVE`` over several lists, so a channel holds one blocked connection per list it consumes
  (MediaConduit's workers consume their capability's queue and the default queue: two).
- A Lua receive (pop and record in one script): atomic, but a script cannot block, so an idle worker
  would poll: latency or load, and the script's cost on every job.
- Redis Streams with a consumer group (``XREADGROUP`` blocks over several streams and records the
  delivery atomically, ``XACK`` acks): as cheap, but every queue stops being a list, and with it
  every producer that is not this package, ``LLEN``-based queue depths (Flower's broker view, ``status``)
  and the batch watcher.

So ``BLMOVE``: no new data structure, the fewest commands, nothing polled. Its costs: a second blocked
connection per extra queue, and up to one message more than the prefetch limit when several lists
deliver at once (held in the worker's memory, safe in its in-flight list). Priorities are one list per
queue here (``priority_steps`` ``[0]``; kombu's four steps would be four blocked connections per queue);
set the transport option ``priority_steps`` to get kombu's back.

For a shutdown that must hand jobs back at once (a grace period over), :func:`hand_back_all` (or
``Channel.hand_back``) puts everything this process's consumers hold back at the front of its queues in
one atomic script, marked redelivered; call it once the consumers are cancelled, so nothing new comes in.

``MEDIACONDUIT_BROKER_TRANSPORT=kombu`` keeps kombu's own Redis transport (the benchmarks' yardstick).

Kombu also builds a new ``redis.Redis`` for every command it sends outside its consumer's own client: each
publish, each task event, each ack. Redis-py 8 builds a client in about 90 µs (it copies its table of
response callbacks), several times per job; one is kept per connection pool instead (a client over a
pool is safe to share between threads: each command borrows a connection).
"""

from __future__ import annotations

import logging
import os
import select
from queue import Empty
from time import monotonic
from typing import Any

import redis.exceptions
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from ..errors import ReplicationError
from .consumers import OPEN, REDELIVERED_MARK, inflight_key, new_consumer_id, reclaim, renew, requeue
from .keeper import keeper
from .replicas import WAIT_TIMEOUT_MS, write_and_wait

log = logging.getLogger(__name__)
RECEIVE = "RECEIVE"
"""The poller's name for a receiver connection (kombu's own are ``BRPOP`` and ``LISTEN``)."""
_MARK = REDELIVERED_MARK.encode()


class Receiver:
    """One source list's receive: a connection of its own, blocked in ``BLMOVE`` (``BRPOP`` for a
    queue consumed without acknowledgements, which has nothing to hold)."""

    __slots__ = ("source", "queue", "inflight", "client", "no_ack", "waiting", "sent_at", "fd")

    def __init__(self, source: str, queue: str, inflight: str, client: Any) -> None:
        self.source, self.queue, self.inflight, self.client = source, queue, inflight, client
        self.no_ack = False
        self.waiting = False
        self.sent_at = 0.0
        self.fd: int | None = None


class QoS(kombu_redis.QoS):
    """Acknowledgements against the consumer's in-flight list. A taken message is already recorded
    where it lies, so recording it again costs nothing; kombu's visibility sweep of its own ``unacked``
    table stays (``restore_visible``), for messages held by workers of an older version."""

    channel: Channel

    def append(self, message: Any, delivery_tag: Any) -> None:
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        self.channel.forget(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if requeue:
            self.channel.requeue(delivery_tag)
        else:
            self.channel.forget(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> list[Any]:
        # The channel's close already handed back everything it held, delivered or not (Channel.close).
        self._delivered.clear()
        return []


class Channel(kombu_redis.Channel):
    QoS = QoS
    priority_steps = [0]
    lease_seconds = 15.0
    wait_replicas = 0
    from_transport_options: tuple[str, ...] = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options, "lease_seconds", "wait_replicas")
    _shared_client: Any = None

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        if connection.client.transport_options.get("global_keyprefix"):
            raise ValueError("the MediaConduit broker transport does not support global_keyprefix "
                             "(use a Redis database of its own, or MEDIACONDUIT_BROKER_TRANSPORT=kombu)")
        self.consumer_id = new_consumer_id()
        self._receivers: dict[str, Receiver] = {}
        self._by_fd: dict[int, Receiver] = {}
        self._held: dict[Any, tuple[str, str, bytes]] = {}  # delivery tag -> (in-flight list, source, as received)
        self._no_ack_queues: set[str] = set()
        self._listed: list[str] = []  # the source lists this consumer's lease lists
        self._leased = False
        self._pid = 0
        super().__init__(connection, **kwargs)

    # -- clients -------------------------------------------------------------------------------
    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # a connection of its own: the consumer's client, or a receiver's
            return super()._create_client(asynchronous=True)
        if self._pool is None and (self.connection is None or self.connection.client is None):
            # A channel closed with its connection (a broker restart), still asked to ack a message it
            # delivered: kombu would fail building a pool with an AttributeError that nothing handles. A
            # connection error is one Celery logs for the ack and recovers from (the consumer's lease
            # lapses and the message comes back).
            raise redis.exceptions.ConnectionError("this channel's broker connection was closed (broker restart?)")
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:  # a reconnect made a new pool
            client = self._shared_client = super()._create_client()
        return client

    # -- the lease -------------------------------------------------------------------------------
    def _list(self, sources: list[str]) -> None:
        """List ``sources`` under this consumer's lease before anything is taken from them."""
        new = [s for s in sources if s not in self._listed]
        if not new and self._leased:
            return
        self._listed = self._listed + new
        renew(self._create_client(), self.consumer_id, self._listed, self.lease_seconds)
        if not self._leased:
            self._leased, self._pid = True, os.getpid()
            OPEN.add(self)
            keeper.hold(f"consumer {self.consumer_id}", self.lease_seconds, self.renew_lease)
            self.sweep()  # a worker started after a crash takes back at once what a lapsed lease left

    def renew_lease(self) -> bool:
        """The keeper's renewal (False once closed: the lease is dropped); each also sweeps for dead consumers."""
        if self.closed or not self._leased:
            return False
        renew(self._create_client(), self.consumer_id, self._listed, self.lease_seconds)
        if moved := self.sweep():
            log.warning("handed %d job(s) of dead worker(s) back to their queues", moved)
        return True

    def sweep(self) -> int:
        return reclaim(self._create_client())

    def hand_back(self, drop: bool = False) -> int:
        """Put every message this consumer holds, delivered or still unread, back at the front of its
        queue, marked redelivered; how many. ``drop`` also ends the lease (the channel is closing)."""
        if not self._leased or self._pid != os.getpid():  # a forked pool child holds nothing of its parent's
            return 0
        return reclaim(self._create_client(), self.consumer_id, drop=drop)

    # -- receiving -------------------------------------------------------------------------------
    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, *args, **kwargs)

    def start_receiving(self) -> None:
        """At each poll: close the receivers of queues no longer consumed, and while the channel may take
        more, send a receive on every source list without one waiting."""
        sources = [(self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in self.active_queues]
        for gone in set(self._receivers) - {source for source, _ in sources}:
            self._release(self._receivers.pop(gone))
        if not sources or not self.qos.can_consume():
            return
        acked = [source for source, queue in sources if queue not in self._no_ack_queues]
        if acked:
            self._list(acked)
        for source, queue in sources:
            receiver = self._receivers.get(source)
            if receiver is None:
                receiver = self._receivers[source] = Receiver(
                    source, queue, inflight_key(self.consumer_id, source), self._create_client(asynchronous=True))
            if not receiver.waiting:
                receiver.no_ack = queue in self._no_ack_queues
                self._send_receive(receiver)

    def _release(self, receiver: Receiver) -> None:
        """A queue no longer consumed: close its receiver, and put back a message its last receive took
        and nobody read (acknowledged queues; a lost ``BRPOP`` reply is what no-ack consuming accepts)."""
        connection, waiting = receiver.client.connection, receiver.waiting
        if connection is not None:
            connection.disconnect()  # kombu's disconnect hook stops polling its socket
        if waiting and not receiver.no_ack:
            client = self._create_client()
            read = {raw for inflight, _, raw in self._held.values() if inflight == receiver.inflight}
            for raw in client.lrange(receiver.inflight, 0, -1):
                if raw not in read:
                    requeue(client, receiver.inflight, receiver.source, raw)

    def _send_receive(self, receiver: Receiver) -> None:
        cycle, client = self.connection.cycle, receiver.client
        if client.connection is None:
            # A connection of its own, outside the pool: a channel consuming many queues must not exhaust
            # the pool's max_connections that its other commands share.
            pool = client.connection_pool
            client.connection = pool.connection_class(**pool.connection_kwargs)
        if client.connection._sock is None or (self, client, RECEIVE) not in cycle._chan_to_sock:
            cycle._register(self, client, RECEIVE)  # connects, and polls the socket
            receiver.fd = client.connection._sock.fileno()
            self._by_fd[receiver.fd] = receiver
        timeout = self.brpop_timeout or 0
        if receiver.no_ack:
            client.connection.send_command("BRPOP", receiver.source, timeout)
        else:
            client.connection.send_command("BLMOVE", receiver.source, receiver.inflight, "RIGHT", "LEFT", timeout)
        receiver.waiting, receiver.sent_at = True, monotonic()

    def receive_ready(self, fileno: int) -> bool:
        """Read the reply on a receiver's socket and deliver its message (whatever the credit: a
        message taken is already held, and leaving the reply unread would spin the event loop)."""
        receiver = self._by_fd.get(fileno)
        if receiver is None or not receiver.waiting or receiver.client.connection is None:
            if receiver is not None and receiver.client.connection is not None:
                receiver.client.connection.disconnect()  # Redis closed an idle connection: connect again
            raise Empty()
        receiver.waiting = False
        connection = receiver.client.connection
        if connection._sock is None:
            # Disconnected between the command and its reply (a dropped or closed connection): a connection
            # error, which the consumer recovers from by reconnecting (the job taken, if any, sits in this
            # consumer's in-flight list and is handed back), not an AttributeError that ends the worker.
            raise redis.exceptions.ConnectionError(f"the connection receiving from {receiver.source} was closed")
        try:
            reply = receiver.client.parse_response(connection, "BRPOP" if receiver.no_ack else "BLMOVE")
        except self.connection_errors:
            connection.disconnect()
            raise
        if not reply:
            raise Empty()
        raw = reply[1] if receiver.no_ack else reply
        payload = self._accept(receiver.source, receiver.inflight, raw, hold=not receiver.no_ack)
        if payload is None:
            raise Empty()
        self.connection._deliver(payload, receiver.queue)
        return True

    def _accept(self, source: str, inflight: str, raw: bytes, hold: bool = True) -> dict[str, Any] | None:
        """The message as kombu delivers it, remembered for its acknowledgement (None: not a message)."""
        try:
            payload = loads(bytes_to_str(raw))
            properties = payload["properties"]
        except (ValueError, TypeError, KeyError) as exc:
            log.error("dropped an entry of %s that is not a kombu message (%s): %.200r", source, exc, raw)
            if hold:
                self._create_client().lrem(inflight, 1, raw)
            return None
        if raw.startswith(_MARK):  # handed back by a sweep or a shutdown (consumers.py)
            payload.pop("mediaconduit_redelivered", None)
            if isinstance(payload.get("headers"), dict):
                payload["headers"]["redelivered"] = True
            properties.setdefault("delivery_info", {})["redelivered"] = True
        if hold:
            self._held[properties.get("delivery_tag")] = (inflight, source, raw)
        return payload

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        if no_ack:  # kombu's own RPOP: nothing to hold
            return super().basic_get(queue, no_ack=True, **kwargs)
        client = self._create_client()
        for pri in self.priority_steps:
            source = self._q_for_pri(queue, pri)
            self._list([source])
            inflight = inflight_key(self.consumer_id, source)
            raw = client.lmove(source, inflight, "RIGHT", "LEFT")
            if raw is not None and (payload := self._accept(source, inflight, raw)) is not None:
                message = self.Message(payload, channel=self)
                self.qos.append(message, message.delivery_tag)
                return message
        return None

    # -- publishing -----------------------------------------------------------------------------
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish, or with ``wait_replicas`` the same ``LPUSH`` followed by ``WAIT`` on its connection."""
        if not self.wait_replicas or kwargs.get("_publish_batch") is not None:
            return super()._put(queue, message, **kwargs)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            confirmed = write_and_wait(client, self.wait_replicas, ("LPUSH", key, dumps(message)))
        if confirmed < self.wait_replicas:
            raise ReplicationError(
                f"a job published to {queue!r} reached {confirmed} of {self.wait_replicas} Redis replicas in "
                f"{WAIT_TIMEOUT_MS} ms (MEDIACONDUIT_WAIT_REPLICAS); it may be queued on the primary alone")
        return None

    # -- acknowledgements ------------------------------------------------------------------------
    def forget(self, delivery_tag: Any) -> None:
        """Done with a message (acked, or rejected for good): out of the in-flight list."""
        held = self._held.pop(delivery_tag, None)
        if held is None:
            return
        if not self.wait_replicas:
            self._create_client().lrem(held[0], 1, held[2])
            return
        confirmed = write_and_wait(self._create_client(), self.wait_replicas, ("LREM", held[0], 1, held[2]))
        if confirmed < self.wait_replicas:
            log.warning("an acknowledgement reached %d of %d Redis replicas; after a failover its job may come "
                        "back (and return its stored result)", confirmed, self.wait_replicas)

    def requeue(self, delivery_tag: Any) -> None:
        """A rejected message goes back to the front of its queue (if a sweep has not already moved it)."""
        held = self._held.pop(delivery_tag, None)
        if held is not None:
            requeue(self._create_client(), *held)

    # -- connections -----------------------------------------------------------------------------
    def check_receivers(self) -> None:
        """Drop a receiver connection whose reply is overdue (a half-open socket never becomes readable)."""
        if not self.brpop_timeout or not self.health_check_interval:
            return
        now = monotonic()
        for receiver in self._receivers.values():
            connection = receiver.client.connection
            if not receiver.waiting or connection is None or connection._sock is None:
                continue
            if now - receiver.sent_at < self.brpop_timeout + self.health_check_interval:
                continue
            if not select.select([connection._sock], [], [], 0)[0]:
                log.warning("a Redis receive got no reply for %.0f seconds; dropping its connection", now - receiver.sent_at)
                connection.disconnect()

    def _on_connection_disconnect(self, connection: Any) -> None:
        for receiver in self._receivers.values():
            if receiver.client.connection is connection:
                receiver.waiting = False
                if receiver.fd is not None and self._by_fd.get(receiver.fd) is receiver:
                    del self._by_fd[receiver.fd]
                receiver.fd = None
        super()._on_connection_disconnect(connection)

    def close(self) -> None:
        if not self.closed:
            for receiver in self._receivers.values():  # first: no receive may take a message after the hand-back
                if receiver.client.connection is not None:
                    receiver.client.connection.disconnect()
            leased, self._leased = self._leased, False  # the keeper renews no more, even while handing back
            OPEN.discard(self)
            keeper.drop(f"consumer {self.consumer_id}")
            if leased and self._pid == os.getpid():  # a forked pool child holds nothing of its parent's
                try:
                    reclaim(self._create_client(), self.consumer_id, drop=True)
                except (*self.connection_errors, redis.exceptions.RedisError) as exc:
                    log.warning("could not hand back this consumer's jobs (%s); they come back when its lease "
                                "lapses", exc)
        super().close()


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's poller, with a receiver connection per source list in place of one ``BRPOP``."""

    def on_poll_start(self) -> None:
        for channel in self._channels:
            if channel.active_queues or channel._receivers:
                channel.start_receiving()
            if channel.active_fanout_queues:
                self._register_LISTEN(channel)

    def on_readable(self, fileno: int) -> Any:
        chan_type = self._fd_to_chan.get(fileno)
        if chan_type is not None and chan_type[1] == RECEIVE:
            return chan_type[0].receive_ready(fileno)
        return super().on_readable(fileno)

    def maybe_check_brpop_health(self) -> None:
        for channel in self._channels:
            channel.check_receivers()


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()  # type: ignore[assignment]


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """This transport's channel on the master Redis Sentinel names (``sentinel://`` URLs; kombu's own
    discovery, so every new connection after a failover goes to the promoted replica)."""

    from_transport_options = (*Channel.from_transport_options, *(  # type: ignore[assignment]
        o for o in kombu_redis.SentinelChannel.from_transport_options if o not in Channel.from_transport_options))


class SentinelTransport(Transport):
    default_port = 26379  # type: ignore[assignment]
    Channel = SentinelChannel


def hand_back_all() -> int:
    """Hand back what every open consumer of this process holds (see the module's docstring); how many."""
    return sum(consumer.hand_back() for consumer in list(OPEN) if not consumer.closed)


def install(stock: bool = False) -> None:
    """Serve redis://, rediss:// and sentinel:// broker URLs with this transport in this process (kombu looks the
    scheme up in its public alias table when it connects), so URLs, Celery's banner and Flower's broker
    view stay ``redis://``. ``stock``: kombu's own Redis transport."""
    target = "kombu.transport.redis:Transport" if stock else f"{__name__}:Transport"
    sentinel = "kombu.transport.redis:SentinelTransport" if stock else f"{__name__}:SentinelTransport"
    TRANSPORT_ALIASES.update(redis=target, rediss=target, sentinel=sentinel)
