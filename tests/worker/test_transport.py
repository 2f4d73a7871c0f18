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


# -- the atomic receive, leases and hand-backs (one process, the session's Redis) ---------------------
HOLDER = """
import os, signal, sys
from kombu import Connection
import mediaconduit_worker.worker.transport as transport

transport.install()
with Connection(sys.argv[1], transport_options={"lease_seconds": 2}) as conn, conn.SimpleQueue(sys.argv[2]) as queue:
    message = queue.get(timeout=10)  # taken, never acknowledged
    print(message.channel.consumer_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _queue_name() -> str:
    return f"transport-{uuid.uuid4().hex[:8]}"


def _connection(**options):
    from kombu import Connection

    from mediaconduit_worker.celery_app import app

    return Connection(app.conf.broker_url, transport_options={"lease_seconds": 2, **options})


def test_a_taken_message_is_in_its_consumers_in_flight_list_until_acked():
    from mediaconduit_worker.worker.consumers import CONSUMERS_KEY, inflight_key

    name = _queue_name()
    with _connection() as conn, conn.SimpleQueue(name) as queue:
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        client = message.channel._create_client()
        held = inflight_key(message.channel.consumer_id, name)
        assert client.llen(name) == 0 and client.llen(held) == 1
        assert client.hget(CONSUMERS_KEY, message.channel.consumer_id) is not None
        message.ack()
        assert client.llen(held) == 0


def test_a_closed_channel_hands_back_what_it_held_marked_redelivered():
    name = _queue_name()
    with _connection() as conn:
        with conn.SimpleQueue(name) as queue:
            queue.put({"n": 1})
            queue.put({"n": 2})
            first = queue.get(timeout=5)
            assert first.payload == {"n": 1} and not first.delivery_info.get("redelivered")
    with _connection() as conn, conn.SimpleQueue(name) as queue:
        again = queue.get(timeout=5)  # handed back to the front: it is next again
        assert again.payload == {"n": 1} and again.delivery_info["redelivered"] is True
        again.ack()
        second = queue.get(timeout=5)
        assert second.payload == {"n": 2} and not second.delivery_info.get("redelivered")
        second.ack()


def test_a_dead_consumers_message_comes_back_when_its_lease_lapses(redis_server):
    import subprocess
    import sys

    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.consumers import CONSUMERS_KEY, LEASE_PREFIX

    name = _queue_name()
    with _connection() as conn, conn.SimpleQueue(name) as queue:
        queue.put({"n": 7})
        held = subprocess.run([sys.executable, "-c", HOLDER, app.conf.broker_url, name], capture_output=True,
                              text=True, timeout=60)
        dead = held.stdout.strip()
        client = conn.default_channel._create_client()
        assert dead and client.llen(name) == 0, held.stderr
        message = queue.get(timeout=30)  # this consumer's sweep takes it back once the lease is gone
        assert message.payload == {"n": 7} and message.delivery_info["redelivered"] is True
        assert client.exists(LEASE_PREFIX + dead) == 0 and client.hget(CONSUMERS_KEY, dead) is not None
        message.ack()


def test_a_live_consumer_keeps_its_message_past_many_leases():
    import time

    from mediaconduit_worker.worker.consumers import inflight_key

    name = _queue_name()
    with _connection() as holder, holder.SimpleQueue(name) as queue, _connection() as other:
        queue.put({"n": 3})
        message = queue.get(timeout=5)
        client = message.channel._create_client()
        sweeper = other.default_channel
        deadline = time.monotonic() + 5  # 2.5 leases
        while time.monotonic() < deadline:
            assert sweeper.sweep() == 0
            time.sleep(0.5)
        assert client.llen(inflight_key(message.channel.consumer_id, name)) == 1 and client.llen(name) == 0
        message.ack()


def test_hand_back_all_puts_every_held_message_back_now():
    from mediaconduit_worker.worker.transport import hand_back_all

    name = _queue_name()
    with _connection() as conn, conn.SimpleQueue(name) as queue:
        queue.put({"n": 4})
        message = queue.get(timeout=5)
        client = message.channel._create_client()
        assert hand_back_all() >= 1
        assert client.llen(name) == 1
        message.ack()  # a late ack of a handed-back job finds nothing to remove and copies nothing
        assert client.llen(name) == 1
        again = queue.get(timeout=5)
        assert again.payload == {"n": 4} and again.delivery_info["redelivered"] is True
        again.ack()


def test_a_rejected_message_goes_back_to_the_front_once():
    name = _queue_name()
    with _connection() as conn, conn.SimpleQueue(name) as queue:
        queue.put({"n": 5})
        queue.put({"n": 6})
        message = queue.get(timeout=5)
        message.requeue()
        again = queue.get(timeout=5)
        assert again.payload == {"n": 5} and again.delivery_info["redelivered"] is True
        again.ack()
        queue.get(timeout=5).ack()
        assert message.channel._create_client().llen(name) == 0


def test_a_channel_consuming_queue_after_queue_keeps_one_receiver_connection():
    """Remote control replies come on a new queue each call: a receiver per queue no longer consumed is
    closed, so the connections do not pile up."""
    from kombu import Consumer, Queue

    with _connection() as conn:
        channel = conn.channel()
        for _ in range(15):  # more than a pool's 10 connections
            queue = Queue(_queue_name(), channel=channel, auto_delete=True)
            queue.declare()
            with Consumer(channel, [queue], no_ack=True, accept=["json"]):
                try:
                    conn.drain_events(timeout=0.05)
                except TimeoutError:
                    pass
        assert len(channel._receivers) <= 1
        channel.close()


def test_a_message_taken_for_a_queue_no_longer_consumed_goes_back():
    from kombu import Consumer, Queue

    name = _queue_name()
    with _connection() as conn:
        channel = conn.channel()
        queue = Queue(name, channel=channel)
        queue.declare()
        consumer = Consumer(channel, [queue], accept=["json"], callbacks=[lambda body, message: None])
        consumer.consume()
        try:
            conn.drain_events(timeout=0.1)  # a receive now waits on the queue
        except TimeoutError:
            pass
        (receiver,) = channel._receivers.values()
        client = channel._create_client()
        client.lpush(name, "{}")  # taken by the waiting receive, never read
        while not client.llen(receiver.inflight):
            pass
        consumer.cancel()
        channel.connection.cycle.on_poll_start()  # the next poll closes the receiver of a cancelled queue
        assert client.llen(receiver.inflight) == 0 and client.llen(name) == 1
        client.delete(name)
        channel.close()
