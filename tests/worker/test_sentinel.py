"""Redis that survives losing its primary: a real primary, one replica and three Sentinels; workers and a
producer on ``sentinel://`` URLs; the primary SIGKILLed in the middle of a stream of jobs, and started
again later (it comes back as a replica of the promoted one). Jobs lost and run twice are counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import WorkerProcess
from support.sentinel import ReplicationGroup
from test_lifecycle import steps_url  # noqa: F401 (the fixture)

PRODUCER = """
import json, sys, time
from mediaconduit_worker import transform
from mediaconduit_worker.celery_app import app

url, log, queue, count, rate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
sent, refused = {}, {}
for i in range(count):
    text = f"job-{i:03d}"
    try:
        sent[text] = transform.apply_async((text, url, "step", {"log": log, "seconds": 0.1}), queue=queue).id
    except Exception as exc:  # the publish raised: the caller knows this job may not be queued
        refused[text] = f"{type(exc).__name__}: {exc}"
    time.sleep(1 / rate)
    print(f"sent {i + 1}", file=sys.stderr, flush=True)
results = {}
for text, task_id in sent.items():
    try:
        results[text] = app.AsyncResult(task_id).get(timeout=90)["asset"]["content"]
    except Exception as exc:
        results[text] = f"error: {type(exc).__name__}: {exc}"
print(json.dumps({"sent": sent, "refused": refused, "results": results}))
"""


def _run(tmp_path: Path, url: str, wait_replicas: int) -> dict[str, Any]:
    group = ReplicationGroup(tmp_path / "redis", replicas=1)
    queue, log = f"ha-{wait_replicas}", tmp_path / "runs.log"
    env = {"MEDIACONDUIT_BROKER_URL": group.url, "MEDIACONDUIT_RESULT_BACKEND": group.url,
           "MEDIACONDUIT_WAIT_REPLICAS": str(wait_replicas), "MEDIACONDUIT_WORKER_LEASE": "5"}
    workers = [WorkerProcess(queue=queue, pool=pool, concurrency=2, env=env) for pool in ("prefork", "threads")]
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, url, str(log), queue, "160", "8"], env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress: list[str] = []
    threading.Thread(target=lambda: progress.extend(producer.stderr or []), daemon=True).start()
    try:
        while sum(line.startswith("sent") for line in progress) < 60:  # a third of the stream sent
            assert producer.poll() is None, "".join(progress)[-3000:]
            time.sleep(0.05)
        old = group.master_port()
        killed_at = time.monotonic()
        group.node_on(old).kill()
        new = group.wait_for_new_master(old)
        promoted_after = time.monotonic() - killed_at
        time.sleep(3)
        group.node_on(old).start()  # back, as a replica of the promoted one
        out, _ = producer.communicate(timeout=400)
        report = json.loads(out.strip().splitlines()[-1])
        stats = group.node_on(new).client().info("commandstats")
        report["waits"] = stats.get("cmdstat_wait", {}).get("calls", 0)  # WAITs the promoted primary answered
    finally:
        producer.kill()
        for w in workers:
            w.stop()
        group.stop()
    runs = log.read_text().splitlines() if log.exists() else []
    report["ran"] = {text: runs.count(f"start {text}") for text in [*report["sent"], *report["refused"]]}
    report["promoted_after"], report["new_master"] = promoted_after, new
    report["logs"] = "\n".join(w.log_text()[-3000:] for w in workers)
    return report


@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["async-replication", "wait-1-replica"])
def test_a_primary_killed_mid_stream_fails_over_and_jobs_carry_on(tmp_path, steps_url, wait_replicas):  # noqa: F811
    report = _run(tmp_path, steps_url, wait_replicas)
    sent, results, ran = report["sent"], report["results"], report["ran"]
    done = [t for t, r in results.items() if r == f"{t}+"]
    never_ran = [t for t in sent if ran[t] == 0]
    no_result = [t for t in sent if results[t] != f"{t}+"]
    twice = [t for t, n in ran.items() if n > 1]
    print(f"WAIT {wait_replicas}: promoted after {report['promoted_after']:.1f}s; {len(sent)} published, "
          f"{len(report['refused'])} refused at publish, {len(done)} done, {len(never_ran)} never ran, "
          f"{len(no_result)} without a result, {len(twice)} ran twice; of the refused, "
          f"{sum(ran[t] > 0 for t in report['refused'])} ran all the same; {report['waits']} WAITs on the new primary")
    assert (report["waits"] > 0) == bool(wait_replicas)  # the option is what made the difference
    # producers and workers carry on: the jobs sent after the failover all ran and returned
    late = list(sent)[-40:]
    assert all(results[t] == f"{t}+" for t in late), ({t: results[t] for t in late if results[t] != f"{t}+"},
                                                      report["logs"])
    if wait_replicas:
        # no job whose publish returned is lost, none returns no result, and a refused publish said so
        assert never_ran == [] and no_result == [], (never_ran, {t: results[t] for t in no_result}, report["logs"])
        assert all("replicas" in why for why in report["refused"].values()), report["refused"]
