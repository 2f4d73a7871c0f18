"""Monitoring with real processes: Flower (loopback, basic auth, /metrics, provider/model/capability
per job) and ``mediaconduit status`` (workers, queues, loaded providers, services)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO
from support.flower import running_flower


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def _command_lines(pid: int) -> str:
    """What ``ps`` shows for a process and its children: their command lines."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return "\n".join(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                     for p in [str(pid), *children] if Path(f"/proc/{p}/cmdline").exists())


def test_compose_flower_gets_its_password_from_the_environment():
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    flower = compose["services"]["flower"]
    command = flower["command"] if isinstance(flower["command"], str) else " ".join(flower["command"])
    assert command.split() == ["mediaconduit", "flower"]  # turns MEDIACONDUIT_FLOWER_AUTH into FLOWER_BASIC_AUTH
    assert "MEDIACONDUIT_FLOWER_AUTH" in flower["environment"]
    assert flower["environment"]["MEDIACONDUIT_FLOWER_ADDRESS"] == "0.0.0.0"  # inside the container
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])  # published on loopback only


@pytest.fixture
def flower():
    with running_flower("ops:flower-pw") as running:
        yield running


def test_flower_loopback_auth_metrics_and_job_details(flower, text_worker, echo_url):
    from mediaconduit_worker import transform

    base, port, pid = flower
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
    shown = _command_lines(pid)
    assert "flower" in shown and "flower-pw" not in shown  # the password came through the environment
    auth = ("ops", "flower-pw")
    assert httpx.get(f"{base}/api/workers", timeout=5).status_code == 401
    assert httpx.get(f"{base}/api/workers", auth=("ops", "wrong"), timeout=5).status_code == 401

    def flower_record(task_id: str, timeout: float = 30) -> dict:
        """Flower's view of a finished job, once it has seen the job's events through SUCCESS."""
        deadline = time.monotonic() + timeout
        record: dict = {}
        while time.monotonic() < deadline:
            reply = httpx.get(f"{base}/api/task/info/{task_id}", auth=auth, timeout=5)
            record = reply.json() if reply.status_code == 200 else {}
            if record.get("state") == "SUCCESS" and record.get("name"):
                break
            time.sleep(0.3)
        return record

    # Flower's event receiver binds its queue a moment after its HTTP side answers: events sent
    # before that (task-sent) are not delivered to it. Wait until it sees a whole job first.
    deadline = time.monotonic() + 60
    while not flower_record(transform.delay("warm-up", echo_url, "echo").id, timeout=5).get("name"):
        assert time.monotonic() < deadline, "Flower never saw a job's events"
    r = transform.delay("watched", echo_url, "upper", {"api_key": "sk-secret-value"})
    assert r.get(timeout=60)["asset"]["content"] == "WATCHED"
    task = flower_record(r.id)
    assert task.get("state") == "SUCCESS", task
    assert task["name"] == "mediaconduit.transform"
    assert json.loads(task["args"])[1:3] == [echo_url, "upper"]  # provider and model, as JSON
    assert task["routing_key"] == "text-to-text"  # capability = queue
    assert "sk-secret-value" not in json.dumps(task)  # redacted in what Flower shows
    # The task page shows the event's summary; the whole record, generation prompt included, is the backend's,
    # which Flower's result API reads (docs/record.md, "What events and logs show").
    whole = httpx.get(f"{base}/api/task/result/{r.id}", auth=auth, timeout=10).json()["result"]
    assert whole["metadata"]["generation_prompt"]["model_id"] == "upper" and whole["asset"]["content"] == "WATCHED"
    shown = json.loads(task["result"])  # the summary is JSON too
    assert "generation_prompt" not in shown["metadata"] and shown["metadata"]["provider"] == "echo-provider"
    assert "sk-secret-value" not in json.dumps(whole)

    metrics = httpx.get(f"{base}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert "flower_events_total" in metrics.text and "mediaconduit.transform" in metrics.text


def test_status_lists_workers_queues_and_loaded_providers(text_worker, echo_url):
    from mediaconduit_worker import transform
    from mediaconduit_worker.cli import main

    transform.delay("load me", echo_url, "echo").get(timeout=60)
    res = CliRunner().invoke(main, ["status", "--json", "--timeout", "3"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    workers = {w["worker"]: w for w in json.loads(res.output)}
    me = workers[text_worker.hostname]
    assert {"text-to-text", "mediaconduit"} <= set(me["queues"])
    assert me["concurrency"] == 2
    assert [p["id"] for p in me["providers"] if p["url"] == echo_url] == ["echo-provider"]
    assert set(me["services"]) >= {"available", "containers"}

    table = CliRunner().invoke(main, ["status"], catch_exceptions=False, env={"COLUMNS": "200"})
    assert text_worker.hostname in table.output and "echo-provider" in table.output


def test_flower_defaults_apply_to_a_celery_flower_command_only(monkeypatch) -> None:
    from mediaconduit_worker.worker.flower import apply_flower_defaults, flower_env

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")})
    for argv in (["/venv/bin/pytest", "-k", "flower"], ["/venv/bin/celery", "-A", "app", "worker"]):
        apply_flower_defaults(argv)
        assert not any(k.startswith("FLOWER_") for k in os.environ)
    for argv in (["/venv/bin/celery", "-A", "mediaconduit_worker.celery_app", "flower"],
                 ["/venv/lib/python3.11/site-packages/celery/__main__.py", "-A", "app", "flower", "--port=1"]):
        apply_flower_defaults(argv)
        assert {k: os.environ.pop(k) for k in flower_env()} == flower_env()
