"""A job's life outside its provider call, with real workers on a real Redis: cancels that stick (sent
while no worker runs, to a running job in each pool, to a chain), jobs that could not start in time, and
deploys (SIGTERM with a grace period, a rolling restart under a stream of jobs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import WorkerProcess

MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")
STEPS = """
import time
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text


class Step(TextToTextModel):
    def transform(self, input, options=None):
        opts = options or {}
        text = input_text(input)
        with open(opts["log"], "a") as fh:  # one line per execution that began, to count runs
            fh.write(f"start {text}\\n")
        end = time.monotonic() + float(opts.get("seconds", 0))
        while time.monotonic() < end:  # Python code that only an interruption stops early
            time.sleep(0.05)
        with open(opts["log"], "a") as fh:
            fh.write(f"end {text}\\n")
        return Text.from_string(text + "+")


class StepProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: Step}

    def pricing_of(self, model_id):
        return {"request": 0.01}  # so a batch's budget is held and charged for each call
"""


@pytest.fixture(scope="module")
def steps_url(tmp_path_factory) -> str:
    from conftest import publish

    folder = tmp_path_factory.mktemp("steps")
    manifest = {"id": "steps", "name": "Steps", "type": "local", "capabilities": ["text-to-text"],
                "models": [{"id": "step", "capabilities": ["text-to-text"]}],
                "main": "provider.py", "exportName": "StepProvider"}
    import yaml

    (folder / "MediaConduit.provider.yml").write_text(yaml.safe_dump(manifest))
    (folder / "provider.py").write_text(STEPS)
    return publish(folder, "steps-provider", org="tests")


class Lane:
    """A private queue, the jobs sent to it and the workers started on it (plain ``celery worker``)."""

    def __init__(self, tmp_path: Path, url: str, env: dict[str, str] | None = None) -> None:
        self.queue = f"lane-{uuid.uuid4().hex[:8]}"
        self.log = tmp_path / "runs.log"
        self.url = url
        self.env = env or {}
        self.workers: list[WorkerProcess] = []

    def signature(self, text: str, seconds: float = 0) -> Any:
        from mediaconduit_worker import transform

        return transform.si(text, self.url, "step", {"log": str(self.log), "seconds": seconds}).set(queue=self.queue)

    def send(self, text: str, seconds: float = 0, **call: Any) -> Any:
        from mediaconduit_worker import transform
        from mediaconduit_worker.celery_app import app

        try:
            return transform.apply_async((text, self.url, "step", {"log": str(self.log), "seconds": seconds}),
                                         queue=self.queue, **call)
        finally:
            app.amqp.queues.pop(self.queue, None)

    def start(self, pool: str = "prefork", concurrency: int = 2, wait: bool = True) -> WorkerProcess:
        w = WorkerProcess(queue=self.queue, pool=pool, concurrency=concurrency, env=self.env)
        self.workers.append(w)
        return w.wait_ready() if wait else w

    def runs(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def wait_for_run(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while f"start {text}" not in self.runs():
            assert time.monotonic() < deadline, f"{text} never started: {self.runs()}"
            time.sleep(0.05)

    def close(self) -> None:
        for w in self.workers:
            w.stop()
            print(f"--- {w.hostname}\n{w.log_text()[-4000:]}")  # shown when the test failed


@pytest.fixture
def lane(tmp_path, steps_url):
    lane = Lane(tmp_path, steps_url, {"MEDIACONDUIT_SHUTDOWN_GRACE": "3"})
    yield lane
    lane.close()


def mediaconduit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MEDIACONDUIT), *args], capture_output=True, text=True, timeout=120)


def revoked_meta(result: Any) -> dict[str, Any]:
    meta = result.backend.get_task_meta(result.id)
    assert meta["status"] == "REVOKED", meta
    return meta["revoked"]


def wait_state(result: Any, state: str, timeout: float = 60) -> float:
    """Seconds until the job's stored state is ``state``."""
    started = time.monotonic()
    while result.backend.get_task_meta(result.id)["status"] != state:
        assert time.monotonic() - started < timeout, result.backend.get_task_meta(result.id)
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_cancel_sent_while_every_worker_is_down_sticks(lane):
    from celery.exceptions import TaskRevokedError

    cancelled, kept = lane.send("cancelled"), lane.send("kept")
    proc = mediaconduit("cancel", cancelled.id, "--reason", "changed my mind")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"task_id": cancelled.id, "state": "REVOKED", "reason": "changed my mind"}
    record = revoked_meta(cancelled)  # REVOKED at once, though no worker heard the broadcast
    assert record["state"] == "CANCELLED" and record["reason"] == "changed my mind" and record["at"]
    lane.start()
    assert kept.get(timeout=60)["asset"]["content"] == "kept+"
    with pytest.raises(TaskRevokedError, match="changed my mind"):
        cancelled.get(timeout=10)
    lane.workers[0].stop()  # a restarted worker has not forgotten either: the message was dropped
    lane.start()
    assert lane.send("after").get(timeout=60)["asset"]["content"] == "after+"
    assert "start cancelled" not in lane.runs() and "start kept" in lane.runs()
    finished = mediaconduit("cancel", kept.id)
    assert finished.returncode == 1 and finished.stderr.strip() == f"error: already finished, not cancelled: {kept.id} (SUCCESS)"


def test_a_revoke_from_async_result_sticks_and_cancels_later_chain_steps(lane):
    from celery import chain

    last = chain(lane.signature("one"), lane.signature("two"), lane.signature("three")).apply_async()
    first = last.parent.parent
    first.revoke()  # AsyncResult.revoke(), no worker up
    lane.start()
    for step in (last, last.parent):  # never sent, yet not PENDING forever
        wait_state(step, "REVOKED")
        assert "chain" in revoked_meta(step)["reason"]
    assert revoked_meta(first)["state"] == "CANCELLED"
    assert lane.send("proof").get(timeout=60)
    assert not any(line.endswith(("one", "two", "three")) for line in lane.runs())


@pytest.mark.parametrize("pool", ["prefork", "threads", "gevent"])
def test_a_running_job_is_interrupted_and_ends_revoked(lane, pool):
    from celery import chain

    lane.start(pool=pool, concurrency=1)
    last = chain(lane.signature("long", seconds=120), lane.signature("next")).apply_async()
    running = last.parent
    lane.wait_for_run("long")
    sent = time.monotonic()
    running.revoke()
    wait_state(running, "REVOKED", timeout=30)
    took = time.monotonic() - sent
    print(f"{pool}: revoke() to REVOKED stored by the worker in {took:.2f}s")
    assert revoked_meta(running)["state"] == "CANCELLED"
    wait_state(last, "REVOKED")
    # Its one slot is free again, and the job did not finish on its own.
    assert lane.send("free").get(timeout=60)["asset"]["content"] == "free+"
    assert "end long" not in lane.runs() and "start next" not in lane.runs()


def test_expired_and_cancelled_jobs_do_not_run_and_are_not_charged(lane):
    """``expires`` (seconds) and ``start_by`` (a time) passed before any worker could start them: EXPIRED,
    not run. All jobs are in one batch with a budget, priced $0.01 a call: only the one that ran is charged."""
    from mediaconduit_worker.worker.headers import BATCH_HEADER
    from mediaconduit_worker.worker.limits import get_state
    from mediaconduit_worker.worker.signing import sign_batch_header

    batch_id = f"b-{uuid.uuid4().hex[:8]}"

    def in_batch(task_id: str) -> dict[str, Any]:
        """The batch header, signed for this job, as a batch's producer sends it."""
        return {"task_id": task_id, "headers": {BATCH_HEADER: sign_batch_header(batch_id, 1.0, task_id)}}

    soon = datetime.now(UTC) + timedelta(seconds=1)
    by_expires = lane.send("late-expires", expires=1, **in_batch(f"{batch_id}-1"))
    by_start_by = lane.send("late-start-by", start_by=soon, **in_batch(f"{batch_id}-2"))
    in_time = lane.send("in-time", start_by=datetime.now(UTC) + timedelta(hours=1), **in_batch(f"{batch_id}-3"))
    cancelled = lane.send("cancelled", **in_batch(f"{batch_id}-4"))
    cancelled.revoke()
    time.sleep(1.5)
    lane.start()
    assert in_time.get(timeout=60)["asset"]["metadata"]["cost"]["usd"] == 0.01
    for late in (by_expires, by_start_by):
        wait_state(late, "REVOKED")
        record = revoked_meta(late)
        assert record["state"] == "EXPIRED" and "not started by" in record["reason"]
    assert revoked_meta(cancelled)["state"] == "CANCELLED"
    assert [line for line in lane.runs() if "late" in line or "cancelled" in line] == []
    assert get_state().spend(f"batch:{batch_id}") == (0.01, 0.0)


@pytest.mark.parametrize("pool", ["prefork", "threads", "gevent"])
def test_sigterm_lets_short_jobs_finish_and_hands_long_ones_back(lane, pool):
    """A worker told to stop takes no more jobs, keeps none past its grace (3 s here) and loses none: the
    short job ends where it ran, the long one is handed back at once and finished by the next worker, as is
    one sent during the grace."""
    first = lane.start(pool=pool, concurrency=2)
    short, long = lane.send("short", seconds=1), lane.send("long", seconds=8)
    lane.wait_for_run("short")
    lane.wait_for_run("long")
    stopping = time.monotonic()
    os.killpg(first.proc.pid, signal.SIGTERM)
    time.sleep(0.5)
    late = lane.send("late")
    first.proc.wait(30)
    stopped = time.monotonic() - stopping
    print(f"{pool}: SIGTERM to exit: {stopped:.1f}s (grace 3s)")
    assert first.proc.returncode == 0, first.log_text()[-3000:]
    assert short.get(timeout=10)["asset"]["content"] == "short+", first.log_text()[-5000:]
    assert lane.runs().count("start long") == 1 and "end long" not in lane.runs() and "start late" not in lane.runs()
    lane.start()
    assert long.get(timeout=60)["asset"]["content"] == "long+" and late.get(timeout=60)["asset"]["content"] == "late+"
    runs = lane.runs()
    assert runs.count("start short") == 1 and runs.count("start long") == 2 and runs.count("end long") == 1


def test_a_rolling_restart_under_a_stream_of_jobs_loses_none(lane):
    """Every worker (one threads, one prefork) replaced one by one while jobs stream in: each job ends
    once, and none waits longer than its own run plus the grace (3 s here) plus slack: a job cut short at
    the grace went back to the queue at once and ran again whole elsewhere."""
    import threading

    rate, seconds, grace = 4, 24, 3.0
    olds = [lane.start(pool="threads", concurrency=4), lane.start(pool="prefork", concurrency=2)]
    sent: list[tuple[Any, float, float]] = []

    def stream() -> None:
        for i in range(rate * seconds):
            run = 5.0 if i % 4 == 0 else 0.3  # some jobs outlast the grace
            sent.append((lane.send(f"job-{i:03d}", seconds=run), time.time(), run))
            time.sleep(1 / rate)

    producer = threading.Thread(target=stream)
    producer.start()
    time.sleep(3)
    stops = []
    for old in olds:
        lane.start(pool=old.pool, concurrency=4 if old.pool == "threads" else 2)
        began = time.monotonic()
        os.killpg(old.proc.pid, signal.SIGTERM)
        old.proc.wait(60)
        stops.append(time.monotonic() - began)
        assert old.proc.returncode == 0, old.log_text()[-3000:]
    producer.join()
    delays = []
    for result, at, run in sent:
        assert result.get(timeout=120)["asset"]["content"].endswith("+")
        done = result.backend.get_task_meta(result.id)["date_done"]
        delays.append(datetime.fromisoformat(done).timestamp() - at - run)
    runs = lane.runs()
    ends = {f"job-{i:03d}": runs.count(f"end job-{i:03d}") for i in range(len(sent))}
    handed_back = sum(runs.count(f"start {j}") - 1 for j in ends)
    # a job cut short at the grace ran again; one that reached a stopping worker went back unstarted
    cut_short = sum(old.log_text().count("handed back to the queue: its worker is shutting down") for old in olds)
    assert handed_back == cut_short
    print(f"{len(sent)} jobs, 0 lost, {handed_back} handed back and run again; extra delay max "
          f"{max(delays):.1f}s, median {sorted(delays)[len(delays) // 2]:.2f}s (grace {grace:g}s); "
          f"SIGTERM to exit {', '.join(f'{s:.1f}s' for s in stops)}")
    assert set(ends.values()) == {1}, {j: n for j, n in ends.items() if n != 1}
    assert max(delays) < grace + 15  # the slack is generous: a loaded machine starts workers slowly
