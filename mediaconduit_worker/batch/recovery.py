"""Jobs the broker lost, found by the batch that waits for them: a second net.

MediaConduit's transport keeps every message in a list at every instant (a queue or a consumer's
in-flight list, ``worker/transport.py``), so this finds nothing to send as long as Redis keeps its writes.
It stays for what the transport cannot cover: a Redis that lost its last second of writes in a hard crash
(``appendfsync everysec``), and kombu's own transport (``MEDIACONDUIT_BROKER_TRANSPORT=kombu``), which takes
a message with ``BRPOP`` and records it as unacknowledged in a second command. A batch knows every job it
waits for. A job with no final state whose message is in no list and in no unacknowledged table, at two
looks a few seconds apart (one snapshot each, so a message moving between two places is seen in one of
them), is lost. The batch publishes it again under the same id.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import Celery
from kombu.transport.redis import Channel

log = logging.getLogger(__name__)

#: Most messages read in one look; a backlog that large is being worked through, not waiting on a lost job.
MAX_MESSAGES = 20_000
#: Seconds between the two looks that must both miss a job before it is sent again.
LOOK_GAP = 2.0


def _task_id(raw: bytes | str, held: bool) -> str | None:
    """The task id of a queued message (``held``: an unacknowledged entry, ``[message, exchange, key]``)."""
    try:
        body = json.loads(raw)
        message = body[0] if held else body
        task_id = message["headers"]["id"]
    except (ValueError, TypeError, KeyError, IndexError):
        return None  # not a task message (another list in the same Redis)
    return task_id if isinstance(task_id, str) else None


def broker_task_ids(client: Any) -> set[str] | None:
    """Ids of every task message in a Redis broker, queued or held by a worker, read in one transaction;
    None when the backlog is larger than ``MAX_MESSAGES``."""
    lists = list(client.scan_iter(count=1000, _type="list"))
    with client.pipeline(transaction=False) as pipe:
        for key in lists:
            pipe.llen(key)
        pipe.hlen(Channel.unacked_key)
        sizes = pipe.execute()
    if sum(sizes) > MAX_MESSAGES:
        return None
    with client.pipeline(transaction=True) as pipe:
        for key in lists:
            pipe.lrange(key, 0, -1)
        pipe.hvals(Channel.unacked_key)
        *queued, held = pipe.execute()
    found = [_task_id(raw, False) for items in queued for raw in items] + [_task_id(raw, True) for raw in held]
    return {task_id for task_id in found if task_id is not None}


class LostJobs:
    """Two looks at the broker, ``LOOK_GAP`` apart; the task ids missing from both are lost."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._missing: set[str] | None = None
        self._looked_at = 0.0

    def look(self, waiting: set[str]) -> set[str] | None:
        """Of ``waiting`` (task ids whose message should be in the broker), those lost for sure; None until
        the second look is due."""
        if self._missing is not None and time.monotonic() - self._looked_at < LOOK_GAP:
            return None
        with self.app.connection_for_read() as conn:
            if conn.transport.driver_type != "redis":
                return set()  # other brokers acknowledge deliveries themselves
            ids = broker_task_ids(conn.default_channel.client)
        if ids is None:
            self.reset()
            return set()
        if self._missing is None:
            self._missing, self._looked_at = waiting - ids, time.monotonic()
            return None
        lost = (waiting - ids) & self._missing
        self.reset()
        return lost

    def reset(self) -> None:
        """Progress was made, or a pair of looks is over: the next look is a first one."""
        self._missing = None
