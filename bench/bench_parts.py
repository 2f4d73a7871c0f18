"""CPU instructions of each part of ours that a warm echo job crosses outside the task's body, counted by
callgrind: what ``bench_instructions.py``'s round trip holds beyond a raw Celery task besides the steps
(``bench_steps.py``), and which feature each part is.

Each part is called alone on the same echo job as the round trip sends, N times after a warm-up; a figure is
(a process making N calls minus one making none) / N. The yardstick, in the same run: one Redis ``PING`` from
redis-py, the least a call to Redis costs (the revoke lookup is one such call).

    python bench/bench_parts.py [--calls 300]
"""

from __future__ import annotations

import argparse
import sys
import types
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count_calls, git_mirror, isolated_environment, row, senders

#: Where each part runs, and the feature it is.
PARTS = {
    "check_job": "producer: the job refused before queueing if not JSON, too deep or too large (trust boundary)",
    "route": "producer: the capability queue read from the provider's manifest (per-capability pools)",
    "sent_argsrepr": "producer: redacted arguments in the sent message (secrets never in events)",
    "request_argsrepr": "worker main: the size check and redacted arguments of the request (trust boundary)",
    "revoke_lookup": "worker main: the stored revoke or expiry read before a job starts (cancels that stick)",
    "redacted_request": "pool: the request stored with STARTED and SUCCESS, its arguments redacted (secrets)",
    "send_echo": "producer: transform.delay of the echo job, whole (the three producer parts above among it)",
    "send_raw": "yardstick: the raw Celery task's apply_async on the same app and transport",
    "ping": "yardstick: one Redis PING from redis-py",
}


def parts(url: str) -> dict[str, Callable[[], Any]]:
    """Each part as a call on the echo job (imports here: the app must see this process's settings)."""
    from mediaconduit_worker.payload import check_job, refuse_size
    from mediaconduit_worker.worker import app, redaction, revokes
    from mediaconduit_worker.worker.pipeline.job import named_arguments
    from mediaconduit_worker.worker.redis_state import state_redis

    args = ("hello", url, "echo", None)
    body = b'[["hello", "%s", "echo", null], {}, {}]' % url.encode()

    send = senders(url)

    def request() -> Any:
        return types.SimpleNamespace(id=str(uuid.uuid4()), args=list(args), kwargs={}, expires=None)

    return {
        "check_job": lambda: check_job(named_arguments(args, {}), "the job (input, provider, model, options)"),
        "route": lambda: app.transform_queue(app.TRANSFORM_TASK, args, {}, {}),
        "sent_argsrepr": lambda: (redaction.argsrepr(args), redaction.kwargsrepr({})),
        "request_argsrepr": lambda: (refuse_size(len(body), "job"), redaction.argsrepr(list(args)),
                                     redaction.kwargsrepr({})),
        "revoke_lookup": lambda: revokes.why_not_run(request()),
        "redacted_request": lambda: redaction.redacted_request(request()),
        "send_echo": send["echo"],  # published to a queue nobody consumes: the send alone
        "send_raw": send["raw"],
        "ping": lambda: state_redis().ping(),
    }


def measured(name: str, calls: int, url: str) -> None:
    """Runs under valgrind: ``calls`` calls of one part after a warm-up (which also loads the provider)."""
    isolated_environment()
    call = parts(url)[name]
    for _ in range(30 + calls):
        call()



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--measure", choices=PARTS)
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.measure:
        return measured(args.measure, args.calls, args.url)
    url = git_mirror("echo-provider")
    runs = [(n, c) for n in PARTS for c in (0, args.calls)]
    print(f"instructions per call, callgrind, {args.calls} calls of each part of a warm echo job:")
    with ThreadPoolExecutor(2) as pool:
        totals = dict(zip(runs, pool.map(lambda r: count_calls(__file__, r[0], r[1], url), runs)))
    for name, what in PARTS.items():
        row(name, (totals[name, args.calls] - totals[name, 0]) / args.calls / 1000, "k instr", f"  {what}")


if __name__ == "__main__":
    main()
