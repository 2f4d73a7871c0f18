"""Redaction time on adversarial strings, one per secret shape, beside two linear yardsticks over the same
string (``str.count`` of the shape's prefix and ``re.search`` of a literal that is not there).

    python bench/bench_redaction.py [--sizes 65536,1048576]

Each string repeats a shape's prefix with no digit and no end (``"sk-" * n``, ``"eyJ-" * n``, …): a
pattern that scans ahead from every start is quadratic on it. What runs is what the producer and the
worker run: ``redact`` (the stored and shown copy), ``secret_values`` (what errors are scrubbed of) and
``scrub``. Linear patterns keep ``time(1 MiB) / time(64 KiB)`` near 16, as the yardsticks do. Last, a
message scrubbed of a hundred thousand secret values (``str.replace`` reads it once per value; past a
budget the message is withheld).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

from mediaconduit_worker.redaction import redact, scrub, secret_values

#: shape → one repeat of its adversarial string.
ADVERSARIAL = {
    "sk- key": "sk-",
    "xai- key": "xai-",
    "github_pat": "github_pat_-",
    "slack xox": "xoxb--",
    "AWS AKIA": "AKIA",
    "Google AIza": "AIza!",
    "JWT": "eyJ-",
    "Bearer": "bearer -",
    "token": "token token",
    "Basic": "basic ",
    "URL userinfo": "://a:",
    "query secret": "?api_key=&",
    "key words": "AAAAa_",
}


def adversarial(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def seconds(fn: Callable[[], object]) -> float:
    """The least CPU time of three runs: on a shared machine wall time stretches a long run more than a
    short one, CPU time does not."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        fn()
        best = min(best, time.thread_time() - started)
    return best


def redaction(text: str) -> None:
    """What the producer and the worker do with a job holding ``text`` (also as a key name)."""
    job = {"input": text, text: 1}
    redact(job)
    scrub(text, secret_values(job))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="65536,1048576", help="string lengths in characters, comma-separated")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    absent = re.compile("QQQQ")
    print("CPU time of redact + secret_values + scrub of one adversarial string; yardsticks over the same string")
    print(f"  {'shape':<14} {'size':>9} {'redaction ms':>13} {'str.count ms':>13} {'re.search ms':>13}")
    for shape, unit in ADVERSARIAL.items():
        times = []
        for size in sizes:
            text = adversarial(unit, size)
            took = seconds(lambda text=text: redaction(text))
            count = seconds(lambda text=text, unit=unit: text.count(unit[:2]))
            search = seconds(lambda text=text: absent.search(text))
            times.append(took)
            print(f"  {shape:<14} {size:>9} {took * 1e3:>13.2f} {count * 1e3:>13.3f} {search * 1e3:>13.3f}")
        if len(sizes) > 1:
            print(f"  {shape:<14} {'ratio':>9} {times[-1] / times[0]:>13.1f}   (sizes {sizes[-1] // sizes[0]}x)")
    secrets = secret_values({"api_key": [f"{i:08d}xy" for i in range(100_000)]})
    print(f"scrub of a message with the {len(secrets):,} secret values of one job's options")
    for size in (200, *sizes):
        message = adversarial("upstream said no ", size)
        took = seconds(lambda message=message: scrub(message, secrets))
        count = seconds(lambda message=message: message.count("up"))
        print(f"  {'message':<14} {size:>9} {took * 1e3:>13.2f} {count * 1e3:>13.3f}")


if __name__ == "__main__":
    main()
