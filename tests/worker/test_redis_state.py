"""One connection policy for the state Redis (``worker/redis_state.py``): one client per URL per process,
URLs read as Celery reads them, nothing connected on import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from conftest import free_port

from mediaconduit_worker.errors import MediaConduitError
from mediaconduit_worker.worker.redis_state import redis_url, state_redis


def test_one_client_per_url_shared_by_limits_the_cache_batches_and_status():
    from mediaconduit_worker.worker.limits import RoutingState

    client = state_redis()
    assert state_redis() is client and RoutingState().redis is client
    assert client.ping() and client.set("mediaconduit-test-state", "é") and client.get("mediaconduit-test-state") == "é"
    other = state_redis(f"redis://127.0.0.1:{free_port()}/2")
    assert other is not client and other.connection_pool.connection_kwargs["db"] == 2


def test_urls_keep_their_password_tls_and_socket_as_celery_reads_them():
    secure = state_redis("rediss://:s3cret@redis.invalid:6380/1?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs=/ca.pem")
    pool = secure.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs.items() >= {"password": "s3cret", "db": 1, "ssl_cert_reqs": "required",
                                         "ssl_ca_certs": "/ca.pem", "host": "redis.invalid", "port": 6380}.items()
    assert redis_url("redis+socket:///run/redis.sock?db=3") == "unix:///run/redis.sock?db=3"
    with pytest.raises(MediaConduitError, match="the result backend must be a Redis URL .* got a rpc:// URL"):
        redis_url("rpc://")


def test_a_redis_that_is_away_is_retried_then_named():
    client = state_redis(f"redis://127.0.0.1:{free_port()}/0")  # made without connecting
    with pytest.raises(redis.ConnectionError, match="127.0.0.1"):
        client.ping()
    assert client.get_retry()._retries == 6


def test_nothing_connects_on_import():
    code = ("import mediaconduit_worker.worker.limits, mediaconduit_worker.worker.cache, mediaconduit_worker.batch, "
            "mediaconduit_worker.worker.status\n"
            "from mediaconduit_worker.worker import redis_state\n"
            "assert not redis_state._clients, redis_state._clients\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"MEDIACONDUIT_RESULT_BACKEND": f"redis://127.0.0.1:{free_port()}/0", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr


def test_a_process_of_many_threads_gets_a_connection_for_each(redis_server):
    """150 threads each holding a state Redis connection at once (a 1 s BLPOP), as an I/O process of 128 threads
    may: none fails with redis-py 8's default cap of 100; the result backend's pool has the same room."""
    import threading

    from mediaconduit_worker.worker.app import app
    from mediaconduit_worker.worker.redis_state import MAX_CONNECTIONS

    errors: list[BaseException] = []

    def hold() -> None:
        try:
            state_redis().blpop(["mediaconduit:test:nothing-here"], timeout=1)
        except redis.RedisError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hold) for _ in range(150)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert app.backend.client.connection_pool.max_connections == MAX_CONNECTIONS > 128
