"""Kombu's Redis transport, keeping one Redis client per channel.

Kombu builds a new ``redis.Redis`` for every command it sends outside its consumer's own client: each
publish, each task event, each ack. Redis-py 8 builds a client in about 90 µs (it copies its table of
response callbacks), several times per job; an I/O pool at 100 jobs/s per core spends a tenth of its
CPU on that alone. A client over a connection pool is safe to share between threads (each command
borrows a connection; pipelines are made per use), so one is kept per connection pool.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's own client, which kombu already keeps (``Channel.client``)
            return super()._create_client(asynchronous=True)
        if self._pool is None and (self.connection is None or self.connection.client is None):
            # A channel closed with its connection (a broker restart), still asked to ack a message it
            # delivered: kombu would fail building a pool with an AttributeError that nothing handles. A
            # connection error is one Celery logs for the ack and recovers from (the message comes back
            # after the visibility timeout).
            raise redis.exceptions.ConnectionError("this channel's broker connection was closed (broker restart?)")
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:  # a reconnect made a new pool
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Serve redis:// and rediss:// broker URLs with this transport in this process (kombu looks the
    scheme up when it connects), so URLs, Celery's banner and Flower's broker view stay ``redis://``."""
    TRANSPORT_ALIASES.update(redis=f"{__name__}:Transport", rediss=f"{__name__}:Transport")
