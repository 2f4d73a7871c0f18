"""Every job delivered, with real workers on a Redis of their own: none lost whatever is killed when, a
dead worker's jobs back within seconds, a live worker's long job never run twice.

Single ``transform`` jobs are sent by a producer process at a steady rate. The provider appends one line
per call to a file (the job's input and the tag of the worker that ran it) before it works, so a call
killed half-way counts too: executions are counted, not assumed. A "whole worker" kill stops every
process of its tree first and then SIGKILLs them all, the way a container dies: the I/O pool's split
children, in process groups of their own, included.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis as redis_py
from conftest import WorkerProcess, free_port

RECORDER = """
import os, time
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text


class Recorder(TextToTextModel):
    def transform(self, input, options=None):
        opts = options or {}
        text = input_text(input)
        with open(opts["log"], "a") as fh:  # one line per call, before the work: a killed call counts
            fh.write(text + " " + os.environ.get("WORKER_TAG", "?") + "\\n")
        time.sleep(float(opts.get("seconds", 0)))
        return Text.from_string(text.upper())


class RecorderProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: Recorder}
"""

PRODUCER = """
import sys, time
from mediaconduit_worker import transform

n, rate, provider, log, seconds, out = int(sys.argv[1]), float(sys.argv[2]), *sys.argv[3:5], float(sys.argv[5]), sys.argv[6]
start = time.monotonic()
with open(out, "w") as fh:
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        r = transform.apply_async((f"job {i:04d}", provider, "record", {"log": log, "seconds": seconds}))
        fh.write(r.id + "\\n")
        fh.flush()
"""


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(p for child in out.split() for p in tree(int(child)))]


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_whole(worker: WorkerProcess) -> None:
    """The whole tree at once: stopped first, so no process acts on another's death, then SIGKILLed."""
    pids = tree(worker.proc.pid)
    signal_all(pids, signal.SIGSTOP)
    pids = sorted(set(pids) | set(p for pid in pids for p in tree(pid)))
    signal_all(pids, signal.SIGKILL)
    worker.proc.wait(10)


class Rig:
    """A durable Redis of its own, workers, a producer of single jobs, and the provider's call log."""

    def __init__(self, tmp_path: Path, provider_url: str, env: dict[str, str] | None = None) -> None:
        from mediaconduit_worker.worker.broker import EmbeddedRedis

        self.tmp = tmp_path
        self.redis = EmbeddedRedis(tmp_path / "broker", free_port())
        url = self.redis.ensure_started()
        self.client = redis_py.Redis.from_url(url)
        self.env = {"MEDIACONDUIT_BROKER_URL": url, "MEDIACONDUIT_RESULT_BACKEND": url, **(env or {})}
        self.provider_url = provider_url
        self.calls = tmp_path / "calls.log"
        self.ids_file = tmp_path / "ids.txt"
        self.workers: list[WorkerProcess] = []
        self.producer: subprocess.Popen[bytes] | None = None
        self.tags = 0

    def start_worker(self, pool: str = "prefork", concurrency: int = 2, processes: int = 1,
                     env: dict[str, str] | None = None) -> WorkerProcess:
        self.tags += 1
        tag = f"{pool}{self.tags}"
        worker = WorkerProcess(["text-to-text"], concurrency, {**self.env, "WORKER_TAG": tag, **(env or {})}, pool=pool,
                               args=["--processes", str(processes)])
        worker.tag, worker.processes = tag, processes  # type: ignore[attr-defined]
        self.workers.append(worker)
        return worker

    def wait_ready(self, worker: WorkerProcess, timeout: float = 90) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while worker.log_text().count(" ready.") < worker.processes:  # type: ignore[attr-defined]
            assert worker.proc.poll() is None and time.monotonic() < deadline, worker.log_text()[-3000:]
            time.sleep(0.1)
        return worker

    def produce(self, n: int, rate: float, seconds: float) -> None:
        self.producer = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(n), str(rate), self.provider_url, str(self.calls), str(seconds),
             str(self.ids_file)], env={**os.environ, **self.env})

    def ids(self) -> list[str]:
        return self.ids_file.read_text().split() if self.ids_file.exists() else []

    def states(self, ids: list[str]) -> Counter[str]:
        metas = self.client.mget([f"celery-task-meta-{i}" for i in ids]) if ids else []
        return Counter(json.loads(m)["status"] if m else "MISSING" for m in metas)

    def calls_by_input(self) -> Counter[str]:
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        return Counter(line.rsplit(" ", 1)[0] for line in lines)

    def wait_all_done(self, n: int, timeout: float) -> list[str]:
        """Block until the producer sent ``n`` jobs and each has a stored SUCCESS (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.ids()
            if len(ids) == n and self.states(ids)["SUCCESS"] == n:
                return ids
            time.sleep(0.5)
        ids = self.ids()
        raise AssertionError(f"{n - self.states(ids)['SUCCESS']} of {n} jobs not done: {self.states(ids)}; "
                             f"{self.where()}")

    def held(self) -> int:
        """Messages in any consumer's in-flight list."""
        return sum(self.client.llen(k) for k in self.client.scan_iter("mediaconduit:inflight:*"))

    def where(self) -> str:
        return f"queue {self.client.llen('text-to-text')}, in flight {self.held()}, unacked {self.client.hlen('unacked')}"

    def close(self) -> None:
        if self.producer and self.producer.poll() is None:
            self.producer.kill()
        for w in self.workers:
            if w.proc.poll() is None:
                kill_whole(w)
        self.redis.stop()


@pytest.fixture
def recorder_url(make_provider) -> str:
    manifest = {"id": "recorder", "name": "Recorder", "type": "local", "capabilities": ["text-to-text"],
                "models": [{"id": "record", "capabilities": ["text-to-text"]}],
                "main": "provider.py", "exportName": "RecorderProvider"}
    return make_provider("recorder", manifest, {"provider.py": RECORDER})


@pytest.fixture
def rig(tmp_path, recorder_url):
    r = Rig(tmp_path, recorder_url)
    yield r
    r.close()


def test_the_storm_loses_no_job(tmp_path, recorder_url):
    """500 single jobs at a steady rate while workers (prefork, threads, a threads pool split over two
    processes) are killed 30+ times at random instants: a pool child, the main process, the whole tree
    (SIGKILL), or SIGTERM. Every job ends SUCCESS, each ran at least once; re-runs are counted."""
    n, seed = 500, random.randrange(1 << 30)
    rng = random.Random(seed)
    rig = Rig(tmp_path, recorder_url, {"MEDIACONDUIT_WORKER_LEASE": "6"})
    kinds: Counter[str] = Counter()
    try:
        shapes = [("prefork", 2, 1), ("threads", 4, 1), ("threads", 4, 2)]
        live = [rig.start_worker(*shape) for shape in shapes]
        for w in live:
            rig.wait_ready(w)
        rig.produce(n, rate=12, seconds=0.2)
        assert rig.producer is not None
        while rig.producer.poll() is None or sum(kinds.values()) < 30:
            time.sleep(rng.uniform(0.6, 1.6))
            kind = rng.choices(["child", "main", "tree", "term"], [2, 2, 2, 4])[0]
            # each prefork worker's pool children, read once: a child may be replaced between two reads
            parents = [kids for w in live if w.pool == "prefork" and (kids := w.child_pids())]
            if kind == "child" and not parents:
                kind = "tree"
            if kind == "child":
                with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
                    os.kill(rng.choice(rng.choice(parents)), signal.SIGKILL)
            else:
                victim = rng.choice(live)
                if kind == "main":
                    os.kill(victim.proc.pid, signal.SIGKILL)  # split children get SIGTERM from its death
                elif kind == "tree":
                    kill_whole(victim)
                else:
                    os.kill(victim.proc.pid, signal.SIGTERM)  # what an orchestrator sends: warm shutdown
                live.remove(victim)
                live.append(rig.start_worker(*rng.choice(shapes)))
            kinds[kind] += 1
        ids = rig.wait_all_done(n, timeout=240)
        calls = rig.calls_by_input()
        runs = Counter(calls[f"job {i:04d}"] for i in range(n))
        lost = n - rig.states(ids)["SUCCESS"]
        print(f"\nstorm (seed {seed}): {n} jobs, kills {dict(kinds)}, lost {lost}, "
              f"calls per job {dict(sorted(runs.items()))}, {sum(calls.values())} calls")
        assert lost == 0
        assert 0 not in runs  # every stored SUCCESS came from a call
        deadline = time.monotonic() + 60
        while rig.held() or rig.client.llen("text-to-text"):
            assert time.monotonic() < deadline, f"messages left behind: {rig.where()}"
            time.sleep(0.5)
    finally:
        rig.close()


def test_a_whole_worker_killed_mid_job_has_its_jobs_finished_elsewhere(rig):
    """Default settings (a visibility timeout of an hour): the jobs of a worker SIGKILLed whole come back
    when its lease lapses and run on the other worker."""
    first = rig.wait_ready(rig.start_worker("prefork", concurrency=3))
    rig.produce(3, rate=50, seconds=6)
    deadline = time.monotonic() + 60
    while sum(rig.calls_by_input().values()) < 3:
        assert time.monotonic() < deadline, rig.where()
        time.sleep(0.1)
    kill_whole(first)
    killed = time.monotonic()
    second = rig.wait_ready(rig.start_worker("prefork", concurrency=3))
    rig.wait_all_done(3, timeout=90)
    lines = rig.calls.read_text().splitlines()
    assert Counter(line.rsplit(" ", 1)[1] for line in lines) == {first.tag: 3, second.tag: 3}
    print(f"\nthree 6 s jobs of a worker killed whole: all done on the other {time.monotonic() - killed:.1f} s "
          f"after the kill")
    assert rig.held() == 0 and rig.client.llen("text-to-text") == 0


def test_a_job_three_times_the_visibility_timeout_runs_once_beside_an_idle_worker(tmp_path, recorder_url):
    env = {"MEDIACONDUIT_VISIBILITY_TIMEOUT": "5", "MEDIACONDUIT_WORKER_LEASE": "3"}
    rig = Rig(tmp_path, recorder_url, env)
    try:
        for _ in range(2):
            rig.wait_ready(rig.start_worker("prefork", concurrency=1))
        rig.produce(1, rate=1, seconds=15)  # 3x the visibility timeout, 5x the lease
        rig.wait_all_done(1, timeout=90)
        assert rig.calls_by_input() == {"job 0000": 1}
    finally:
        rig.close()


def test_a_redis_restart_mid_stream_loses_no_single_job(rig):
    n = 200
    for pool, concurrency in (("prefork", 2), ("threads", 4)):
        rig.wait_ready(rig.start_worker(pool, concurrency))
    rig.produce(n, rate=20, seconds=0.05)
    deadline = time.monotonic() + 120
    while rig.states(rig.ids())["SUCCESS"] < 60:
        assert time.monotonic() < deadline, rig.where()
        time.sleep(0.1)
    assert rig.redis.stop()  # a clean shutdown: the append-only file holds the queues and in-flight lists
    time.sleep(2)
    rig.redis.ensure_started()
    ids = rig.wait_all_done(n, timeout=240)
    runs = Counter(rig.calls_by_input()[f"job {i:04d}"] for i in range(n))
    print(f"\nredis restart: {n} jobs, lost {n - rig.states(ids)['SUCCESS']}, calls per job {dict(sorted(runs.items()))}")
    assert 0 not in runs


def test_a_job_whose_worker_died_before_its_ack_is_not_run_again(rig):
    """The one case where a job may run twice: its worker died after the provider call and before the
    acknowledgement. The SUCCESS it stored is found on redelivery, and the provider is not called again."""
    first = rig.wait_ready(rig.start_worker("prefork", concurrency=1, env={"MEDIACONDUIT_WORKER_LEASE": "3"}))
    rig.produce(1, rate=1, seconds=2)
    deadline = time.monotonic() + 60
    while not rig.calls_by_input():
        assert time.monotonic() < deadline, rig.where()
        time.sleep(0.05)
    os.kill(first.proc.pid, signal.SIGSTOP)  # the main process acks; its pool child stores the result
    (task_id,) = rig.ids()
    while rig.states([task_id])["SUCCESS"] != 1:
        assert time.monotonic() < deadline, rig.where()
        time.sleep(0.05)
    kill_whole(first)
    assert rig.held() == 1  # stored, never acknowledged
    second = rig.wait_ready(rig.start_worker("prefork", concurrency=1))
    deadline = time.monotonic() + 60
    while rig.held() or rig.client.llen("text-to-text"):
        assert time.monotonic() < deadline, rig.where()
        time.sleep(0.2)
    assert rig.calls_by_input() == {"job 0000": 1}
    assert "already completed successfully" in second.log_text()


@pytest.mark.parametrize("pool", ["gevent", "threads", "prefork"])
def test_a_worker_whose_connections_redis_keeps_cutting_loses_nothing(rig, pool):
    """Redis cuts every client connection (``CLIENT KILL TYPE normal``, what a failover or a proxy's cut
    does) every 50 ms for 10 s while a gevent, threads or prefork worker works through 200 queued single
    jobs of 0.2 s: the worker reconnects each time and every job ends SUCCESS; calls per job are counted. The cuts
    come from one connection of their own, which CLIENT KILL skips; the test's other connections are cut
    too, so nothing else talks to Redis while they run."""
    n = 200
    worker = rig.wait_ready(rig.start_worker(pool, concurrency=4))
    # queued before the cuts start (a publish is not what is cut), 0.2 s each: 10 s of work on 4 slots, so the
    # queue is still full when the producer's process has exited, however fast the worker drains it
    rig.produce(n, rate=1000, seconds=0.2)
    assert rig.producer is not None and rig.producer.wait(120) == 0, "the producer failed"
    cuts: Counter[str] = Counter()
    cutter = redis_py.Redis.from_url(rig.env["MEDIACONDUIT_BROKER_URL"], single_connection_client=True)
    try:
        deadline = time.monotonic() + 10
        while cutter.llen("text-to-text") and time.monotonic() < deadline and worker.proc.poll() is None:
            cuts["connections"] += cutter.client_kill_filter(_type="normal")
            cuts["rounds"] += 1
            time.sleep(0.05)
    finally:
        cutter.close()
    ids = rig.wait_all_done(n, timeout=120)
    runs = Counter(rig.calls_by_input()[f"job {i:04d}"] for i in range(n))
    print(f"\nCLIENT KILL every 50 ms ({pool}): {cuts['rounds']} rounds cut {cuts['connections']} connections; "
          f"{n} jobs, lost {n - rig.states(ids)['SUCCESS']}, calls per job {dict(sorted(runs.items()))}")
    assert cuts["connections"] > 20  # the cuts happened
    assert worker.proc.poll() is None, worker.log_text()[-3000:]
    assert "AttributeError" not in worker.log_text(), worker.log_text()[-3000:]
    assert 0 not in runs
