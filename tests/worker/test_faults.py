"""No job lost under faults. Each test runs a batch of 500 echo jobs (``mediaconduit batch``, a real
producer process) on its own Redis, breaks something while the jobs are in flight, and counts at the
end that every job has exactly one final result: one SUCCESS line per job in RESULTS.jsonl, one
SUCCESS in the result backend, with the right output, and no message left queued or unacknowledged.

The echo model here sleeps 20 ms per job so the batch is still running when the fault hits; the
service test uses the Docker-backed cowsay provider (skips without an engine, fails in CI).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis as redis_py
from conftest import WorkerProcess, free_port

N = 500
SLOW_ECHO = """
import os, time
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text


class SlowEcho(TextToTextModel):
    def transform(self, input, options=None):
        opts = options or {}
        time.sleep(opts.get("delay_ms", 0) / 1000)
        text = input_text(input)
        with open(opts["log"], "a") as fh:  # one line per execution, to count re-runs
            fh.write(text + "\\n")
        return Text.from_string(text.upper())


class SlowEchoProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: SlowEcho}
"""


class FaultRig:
    """A Redis of its own (durable, embedded), workers and one batch producer on it."""

    def __init__(self, tmp_path: Path, provider_url: str) -> None:
        from mediaconduit_worker.worker.broker import EmbeddedRedis

        self.tmp = tmp_path
        self.redis = EmbeddedRedis(tmp_path / "broker", free_port())
        url = self.redis.ensure_started()
        self.client = redis_py.Redis.from_url(url)
        # A short visibility timeout: jobs held by a SIGKILLed worker come back in seconds, not an hour.
        self.env = {"MEDIACONDUIT_BROKER_URL": url, "MEDIACONDUIT_RESULT_BACKEND": url,
                    "MEDIACONDUIT_VISIBILITY_TIMEOUT": "10"}
        self.provider_url = provider_url
        self.workers: list[WorkerProcess] = []
        self.out = tmp_path / "results.jsonl"
        self.exec_log = tmp_path / "executions.log"
        self.inputs = [f"job {i:04d}" for i in range(N)]
        self.batch: subprocess.Popen[str] | None = None

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(["text-to-text"], concurrency=2, env=self.env)
        self.workers.append(worker)
        deadline = time.monotonic() + 60
        while " ready." not in worker.log.read_text(errors="replace"):
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{worker.log_text()}")
            time.sleep(0.1)
        return worker

    def start_batch(self, model: str = "echo", options: dict | None = None) -> None:
        inp = self.tmp / "in.jsonl"
        inp.write_text("".join(json.dumps(t) + "\n" for t in self.inputs))
        opts = json.dumps({"delay_ms": 20, "log": str(self.exec_log)} if options is None else options)
        cmd = [sys.executable, "-m", "mediaconduit_worker.cli", "batch", str(inp), "--provider", self.provider_url,
               "--model", model, "--options", opts, "--out", str(self.out), "--timeout", "600"]
        self.batch = subprocess.Popen(cmd, env={**os.environ, **self.env}, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)

    def finished(self) -> int:
        return len(self.out.read_text().splitlines()) if self.out.exists() else 0

    def wait_finished(self, at_least: int) -> int:
        """Block until ``at_least`` results are in; the fault must still hit a batch in flight."""
        assert self.batch is not None
        deadline = time.monotonic() + 300
        while (done := self.finished()) < at_least:
            if self.batch.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"batch ended early: {self.batch.stdout.read() if self.batch.stdout else ''}")
            time.sleep(0.05)
        assert done < N - 100, f"the batch was nearly over ({done}/{N}) before the fault"
        return done

    def assert_every_job_has_exactly_one_result(self, echo: bool = True) -> None:
        assert self.batch is not None
        try:
            output, _ = self.batch.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            self.batch.kill()
            raise AssertionError(f"batch did not finish: {self.diagnose()}") from None
        assert self.batch.returncode == 0, output
        records = [json.loads(line) for line in self.out.read_text().splitlines()]
        ids = [r["id"] for r in records]
        assert len(records) == N and len(set(ids)) == N, output
        assert Counter(r["status"] for r in records) == {"SUCCESS": N}, output
        contents = [r["result"]["asset"]["content"] for r in records]
        if echo:
            assert sorted(contents) == sorted(t.upper() for t in self.inputs)
        else:  # cowsay art around each input
            assert sum(any(t in c for c in contents) for t in self.inputs) == N
        metas = self.client.mget([f"celery-task-meta-{i}" for i in ids])
        assert Counter(json.loads(m)["status"] if m else "MISSING" for m in metas) == {"SUCCESS": N}
        # Nothing left that could deliver a job again (restored after the visibility timeout at worst).
        deadline = time.monotonic() + 60
        while self.client.llen("text-to-text") or self.client.hlen("unacked") or self.held():
            assert time.monotonic() < deadline, "messages stuck in the queue or the unacked table"
            time.sleep(0.5)
        if not echo:
            return
        runs = Counter(self.exec_log.read_text().splitlines())
        assert set(runs) == set(self.inputs)  # every job ran; re-runs after a fault are allowed
        print(f"{N} jobs, {sum(runs.values())} executions, {sum(c > 1 for c in runs.values())} ran twice or more")

    def held(self) -> int:
        """Messages in any worker's in-flight list (worker/transport.py)."""
        return sum(self.client.llen(k) for k in self.client.scan_iter("mediaconduit:inflight:*"))

    def diagnose(self) -> str:
        """Where the jobs are, for a failure message."""
        c = self.client
        return (f"results {self.finished()}/{N}, queue {c.llen('text-to-text')}, held {self.held()}, unacked {c.hlen('unacked')}, "
                f"unacked_index {c.zrange('unacked_index', 0, -1, withscores=True)}, "
                f"mutex {c.get('unacked_mutex')!r} ttl {c.ttl('unacked_mutex')}\n"
                + "\n".join(w.log_text()[-1500:] for w in self.workers))

    def close(self) -> None:
        if self.batch and self.batch.poll() is None:
            self.batch.kill()
        for w in self.workers:
            if w.proc.poll() is None:
                w.stop()
        self.redis.stop()


@pytest.fixture
def service_rig(tmp_path, provider_urls):
    r = FaultRig(tmp_path, provider_urls["cowsay"])
    yield r
    r.close()


@pytest.fixture
def rig(tmp_path, make_provider):
    manifest = {"id": "slow-echo", "name": "Slow echo", "type": "local", "capabilities": ["text-to-text"],
                "models": [{"id": "echo", "capabilities": ["text-to-text"]}],
                "main": "provider.py", "exportName": "SlowEchoProvider"}
    r = FaultRig(tmp_path, make_provider("slow-echo", manifest, {"provider.py": SLOW_ECHO}))
    yield r
    r.close()


def test_sigkill_of_worker_children(rig):
    worker = rig.start_worker()
    rig.start_batch()
    done = rig.wait_finished(100)
    for victim in worker.child_pids()[:2]:
        os.kill(victim, signal.SIGKILL)
    rig.wait_finished(done + 60)
    os.kill(worker.child_pids()[0], signal.SIGKILL)
    rig.assert_every_job_has_exactly_one_result()
    assert "signal 9 (SIGKILL)" in worker.log.read_text()


def test_sigkill_of_whole_worker_then_a_new_worker(rig):
    first = rig.start_worker()
    rig.start_batch()
    rig.wait_finished(100)
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    rig.start_worker()
    rig.assert_every_job_has_exactly_one_result()


def test_redis_restart_mid_batch(rig):
    """A Redis stopped cleanly mid-batch: every job is in a queue or a worker's in-flight list in its
    append-only file, and every job still ends once."""
    rig.start_worker()
    rig.start_batch()
    rig.wait_finished(100)
    queued_before = rig.client.llen("text-to-text")
    assert queued_before > 0
    assert rig.redis.stop()  # clean shutdown: the append-only file holds the queue
    time.sleep(2)
    rig.redis.ensure_started()
    rig.assert_every_job_has_exactly_one_result()



@pytest.mark.docker
def test_service_container_killed_mid_batch(service_rig, docker_engine):
    """The cowsay provider's container dies under load: calls in flight fail as transient errors and
    are retried with backoff; the next job finds the container gone and starts a new one."""
    from mediaconduit_worker.services import ServiceRegistry

    rig = service_rig
    rig.start_worker()
    rig.start_batch("cowsay-default", {"animal": "tux"})
    rig.wait_finished(100)
    killed = [c for c in ServiceRegistry().managed() if c.status == "running"]
    assert killed, "no running service container to kill"
    for container in killed:
        container.kill()
    rig.assert_every_job_has_exactly_one_result(echo=False)
    assert any(c.status == "running" and c.id not in {k.id for k in killed} for c in ServiceRegistry().managed())
    assert "is no longer running; starting it again" in rig.workers[0].log.read_text()
