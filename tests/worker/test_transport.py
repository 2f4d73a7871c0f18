"""The broker transport: kombu's Redis transport keeping one Redis client per connection pool."""

from __future__ import annotations

import uuid


def test_a_channel_keeps_one_client_and_follows_a_new_pool():
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.transport import Channel

    with app.connection_for_write() as conn:
        assert conn.as_uri().startswith("redis://")  # banners and Flower still see a Redis URL
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        with conn.SimpleQueue(f"transport-{uuid.uuid4().hex[:8]}") as queue:
            queue.put({"n": 1})
            message = queue.get(timeout=5)
            message.ack()
            assert message.payload == {"n": 1}
        assert channel._create_client() is first
        channel._disconnect_pools()  # what kombu does when a connection is lost
        again = channel._create_client()
        assert again is not first and again.connection_pool is channel.pool
        assert again.ping()


def test_a_message_acked_on_a_channel_its_connection_dropped_raises_a_connection_error():
    """A broker restart closes the consumer's connection while pool processes still finish jobs; their
    acks must fail as a connection error (Celery logs it, the message comes back), not an AttributeError."""
    import pytest
    import redis.exceptions

    from mediaconduit_worker.celery_app import app

    conn = app.connection_for_write()
    with conn.SimpleQueue(f"transport-{uuid.uuid4().hex[:8]}") as queue:
        queue.put({"n": 2})
        message = queue.get(timeout=5)
        channel = message.channel
        conn.close()  # the connection goes, the channel and the message stay behind
        channel._disconnect_pools()  # what kombu does when a connection is lost
        with pytest.raises(tuple(conn.connection_errors)) as raised:
            message.ack()
        assert isinstance(raised.value, redis.exceptions.ConnectionError)
