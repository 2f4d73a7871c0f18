"""The multiprocess directory of one worker command: where each of its processes records its series.

prometheus_client's multiprocess mode keeps each process's values in memory-mapped files named for the
process (``counter_<pid>.db``, ``gauge_livesum_<pid>.db`` …) and adds them up at each scrape. So the
directory is one per worker command (host and port), emptied at its start (an earlier run's counters
would be added to this run's), and a process that died has its live gauges removed (busy slots, loaded
providers): at its exit when it exits, at the next scrape when it was killed.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

from ...settings import get_settings

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")


def metrics_dir(port: int) -> Path:
    """The directory of the worker command serving ``port`` on this host, under ``MEDIACONDUIT_HOME``."""
    return get_settings().home / "metrics" / f"{socket.gethostname()}-{port}"


def prepare(port: int) -> Path:
    """Make and empty the directory for ``port`` and set ``PROMETHEUS_MULTIPROC_DIR`` to it, for this
    process and the processes it starts.

    ``prometheus_client`` picks its value class when first imported; ``celery``'s command line imports it
    before a worker starts (Flower's plugin), so an in-memory choice made then is made again here
    (``values.get_value_class``, prometheus_client's own chooser): values are created when a series is
    first used, after this."""
    path = metrics_dir(port)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    if "prometheus_client.values" in sys.modules:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()
    return path


def recording() -> bool:
    """Whether this process records series (its worker command was started with metrics on)."""
    return bool(os.environ.get(ENV))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead(path: Path) -> list[int]:
    """Remove the live gauges of processes that are gone (killed before they could say so); their pids."""
    from prometheus_client import multiprocess

    dead = sorted({int(m.group(1)) for f in path.glob("gauge_live*.db") if (m := _PID.search(f.name))
                   and not _alive(int(m.group(1)))})
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(path))
    return dead
