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
