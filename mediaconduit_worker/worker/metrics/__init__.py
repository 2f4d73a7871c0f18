"""Prometheus metrics of a worker, and the scaling signal.

``mediaconduit worker --metrics-port P`` records the series of ``series.py`` in every process of the
worker (``prometheus_client``'s multiprocess mode: one directory of memory-mapped files per worker
command, ``multiproc.py``) and serves them, with the ones read from Redis at each scrape, from one port
(``exporter.py``). A job's series are recorded by one pipeline step (``step.py``) and by an observer of
each provider call (``calls.CALL_OBSERVERS``), both installed at worker start only when metrics are on,
so a worker without them runs none of this code. The scaling signal (``scaling.py``) is shared by the
exporter and ``mediaconduit status --queues``.

Nothing here imports ``prometheus_client`` at import time: its multiprocess mode is chosen when it is
first imported, by ``PROMETHEUS_MULTIPROC_DIR``, which ``multiproc.prepare`` sets first.
"""

from .multiproc import metrics_dir, prepare, recording
from .scaling import QueueLoad, queue_loads

__all__ = ["QueueLoad", "metrics_dir", "prepare", "queue_loads", "recording"]
