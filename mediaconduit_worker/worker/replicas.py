"""Writes that wait for replicas (``MEDIACONDUIT_WAIT_REPLICAS=N``, Redis ``WAIT``).

Redis replicates asynchronously: a write the primary acknowledged may not have reached a replica when the
primary dies, and the replica Sentinel promotes has never seen it. With N > 0, three writes return only
once N replicas hold them: a publish (the job is queued), an acknowledgement (the job is done with) and a
result write. ``WAIT`` goes on the connection that wrote, in the same round trip (a pipeline): it waits
for that connection's own writes.

When too few replicas confirm within ``WAIT_TIMEOUT_MS``:
- a publish raises ``ReplicationError``: the job may be queued on the primary alone, and it is not sent
  again, since a second copy would run twice;
- a result write is retried as a lost connection would be (writing a result again is harmless);
- an acknowledgement is logged: unconfirmed, the job may come back after a failover, and its stored
  result is returned without running it again (``worker_deduplicate_successful_tasks``).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis

log = logging.getLogger(__name__)

WAIT_TIMEOUT_MS = 2000
"""Longest a write waits for its replicas."""


def write_and_wait(client: Any, replicas: int, *commands: tuple[Any, ...]) -> int:
    """Run ``commands`` and ``WAIT replicas`` on one connection; how many replicas hold them."""
    with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute_command("WAIT", replicas, WAIT_TIMEOUT_MS)
        return int(pipe.execute()[-1])


class WaitingBackend:
    """Mixed in front of Celery's Redis result backend: a result write returns once ``wait_replicas``
    replicas hold it (the same write, then ``WAIT``, in one pipeline)."""

    wait_replicas = 0
    client: Any
    expires: Any

    def set(self, key: Any, value: Any, expires: Any = None, **retry_policy: Any) -> Any:
        # Celery's retrying call: a connection error (or an unconfirmed write) is tried again
        return self.ensure(self._set_and_wait, (key, value, expires), **retry_policy)  # type: ignore[attr-defined]

    def _set_and_wait(self, key: Any, value: Any, expires: Any = None) -> None:
        expires = self.expires if expires is None else expires
        write = ("SETEX", key, expires, value) if expires else ("SET", key, value)
        confirmed = write_and_wait(self.client, self.wait_replicas, write, ("PUBLISH", key, value))
        if confirmed < self.wait_replicas:
            raise redis.TimeoutError(f"a result write reached {confirmed} of {self.wait_replicas} replicas "
                                     f"in {WAIT_TIMEOUT_MS} ms (MEDIACONDUIT_WAIT_REPLICAS)")


@functools.cache
def waiting(backend_cls: type, replicas: int) -> type:
    """``backend_cls`` whose result writes wait for ``replicas`` replicas (itself when 0 or not Redis)."""
    from celery.backends.redis import RedisBackend

    if not replicas or not issubclass(backend_cls, RedisBackend):
        return backend_cls
    return type(f"Waiting{backend_cls.__name__}", (WaitingBackend, backend_cls),
                {"__module__": __name__, "wait_replicas": replicas})
