"""The one way our code reaches the Redis of the result backend, where the shared state lives: route
limits and spend (``limits``), the result cache (``cache``), batch markers (``batch``), worker reports
(``status``) and stored cancels (``revokes``).

The policy, in one place:
- **Which Redis**: the result backend's URL (``MEDIACONDUIT_RESULT_BACKEND``, else the broker URL), as
  given: ``redis://`` or ``rediss://`` (TLS; ``ssl_cert_reqs`` in Celery's ``CERT_REQUIRED`` spelling too),
  user and password from the URL, ``redis+socket://`` for a Unix socket; ``sentinel://h1:26379;sentinel://h2:26379``
  (Celery's form) for the master Redis Sentinel names ``MEDIACONDUIT_SENTINEL_MASTER``, found again
  after a failover.
- **One connection pool per URL per process**, made on first use: nothing connects on import, and a forked
  child gets fresh connections (redis-py's pool checks its pid). The client decodes replies to ``str``.
- **Retries**: a connection error or timeout is retried ``RETRIES`` times with exponential backoff from
  ``RETRY_BASE`` to ``RETRY_CAP`` seconds (about five seconds in all: a Redis restart), then raised; the job
  that met it is retried by the task as any transient error. A command retried after its reply was lost
  runs twice: taking a slot or a budget hold is idempotent (``lua/``), and a repeated release only counts
  the call and its spend again (a budget errs towards refusing).

Celery's result backend keeps its own pool for task states; the broker's connections are the transport's
(``transport.py``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import MediaConduitError
from ..settings import get_settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis

RETRIES = 6
RETRY_BASE = 0.1
RETRY_CAP = 2.0
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection before the attempt counts as failed (and is retried)."""
_CERT_REQS = {"CERT_NONE": "none", "CERT_OPTIONAL": "optional", "CERT_REQUIRED": "required"}

MAX_WAITS = 4096
"""Blocking waits one process may hold at once on ``waiting_redis`` (one connection each)."""
MAX_CONNECTIONS = 1024
"""Connections one process's pool of a URL may open (``state_redis``, and the result backend's): redis-py 8's
default of 100 is below the threads one I/O pool process runs (128 with ``--processes 1``), past which a
command fails with ``MaxConnectionsError`` instead of waiting for a connection."""

_clients: dict[str, redis.Redis] = {}
_waiting: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def redis_url(url: str) -> str:
    """A Celery result-backend URL as redis-py reads it (the same server, the same options)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "redis+socket":
        scheme = "unix"
    elif scheme not in ("redis", "rediss", "unix"):
        raise MediaConduitError(
            f"the result backend must be a Redis URL (redis://, rediss://, redis+socket://, sentinel://) to keep route limits, "
            f"spend, the result cache and batch state; got a {parts.scheme}:// URL")
    query = urlencode([(k, _CERT_REQS.get(v, v) if k == "ssl_cert_reqs" else v) for k, v in parse_qsl(parts.query)])
    return f"{scheme}://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")


def is_sentinel(url: str) -> bool:
    return url.lower().startswith("sentinel://")


def sentinel_options(url: str) -> dict[str, Any]:
    """Celery's transport options for ``url``: the master's name when it is a ``sentinel://`` list."""
    return {"master_name": get_settings().sentinel_master} if is_sentinel(url) else {}


def _sentinel_hosts(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The sentinels of a ``sentinel://h1:26379;sentinel://h2:26379`` list, and the master's db and credentials."""
    hosts, db, password, username = [], 0, None, None
    for chunk in url.split(";"):
        parts = urlsplit(chunk.strip())
        if parts.scheme.lower() != "sentinel" or not parts.hostname:
            raise MediaConduitError(f"a Sentinel URL lists sentinel://HOST:PORT entries separated by ';'; got {chunk!r}")
        hosts.append((parts.hostname, parts.port or 26379))
        if parts.path.strip("/").isdigit():
            db = int(parts.path.strip("/"))
        password, username = password or parts.password, username or parts.username
    return hosts, {"db": db, "password": password, "username": username}


def client_for(url: str, **options: Any) -> redis.Redis:
    """A new client of the Redis at ``url`` (a ``sentinel://`` list: of its current master), with
    ``options`` as redis-py takes them."""
    if not is_sentinel(url):
        return redis.Redis.from_url(redis_url(url), **options)
    hosts, master = _sentinel_hosts(url)
    sentinels = Sentinel(hosts, socket_connect_timeout=options.get("socket_connect_timeout", CONNECT_TIMEOUT))
    return sentinels.master_for(get_settings().sentinel_master, **master, **options)


def async_client_for(url: str, **options: Any) -> aioredis.Redis:
    """``client_for``'s asyncio twin (the gateway's event streams wait on it without a thread each), made
    with the same retry policy; bound to the event loop that first uses it. Imported here: workers never need it."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    options = {"decode_responses": True, "socket_connect_timeout": CONNECT_TIMEOUT, "socket_keepalive": True,
               "retry": AsyncRetry(ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE), RETRIES),
               "retry_on_error": [redis.ConnectionError, redis.TimeoutError], **options}
    if not is_sentinel(url):
        return aioredis.Redis.from_url(redis_url(url), **options)
    hosts, master = _sentinel_hosts(url)
    sentinels = AsyncSentinel(hosts, socket_connect_timeout=options["socket_connect_timeout"])
    return sentinels.master_for(get_settings().sentinel_master, **master, **options)


def state_redis(url: str | None = None) -> redis.Redis:
    """This process's client of the state Redis at ``url`` (default: the result backend's), one pool per URL."""
    return _client(_clients, url, max_connections=MAX_CONNECTIONS)


def waiting_redis(url: str | None = None) -> redis.Redis:
    """``state_redis``'s twin for blocking waits (``transform.stream``'s ``XREAD BLOCK``), with a pool of its own
    of up to ``MAX_WAITS`` connections: each wait holds one, and redis-py's pools hold 100 by default, so
    101 followers in one process would fail, and 100 would leave none for the process's other commands."""
    return _client(_waiting, url, max_connections=MAX_WAITS)


def _client(clients: dict[str, redis.Redis], url: str | None, **options: Any) -> redis.Redis:
    url = url or get_settings().effective_result_backend
    client = clients.get(url)
    if client is None:
        with _lock:
            client = clients.get(url)
            if client is None:
                client = clients[url] = client_for(
                    url, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT,
                    socket_keepalive=True, health_check_interval=30,
                    retry=Retry(ExponentialBackoff(cap=RETRY_CAP, base=RETRY_BASE), RETRIES),
                    retry_on_error=[redis.ConnectionError, redis.TimeoutError], **options)
    return client
