"""Every probe in ``probes.py`` against a real worker: a clear error naming the culprit, no canary read
or fetched, and the same worker serving a good job afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import free_port

from .conftest import CANARY_OPTION, leaked
from .probes import PROBES, Probe

FLOWER_AUTH = "probe:probe-pw"


def _fill(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, sub in subs.items():
            value = value.replace("{" + key + "}", sub)
        return value
    if isinstance(value, dict):
        return {_fill(k, subs): _fill(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    return value


@pytest.fixture(scope="module")
def flower_api() -> Iterator[str]:
    """Flower on loopback with basic auth, as deployed; the probes come in as an operator's API calls."""
    port = free_port()
    env = {**os.environ, "MEDIACONDUIT_FLOWER_PORT": str(port), "MEDIACONDUIT_FLOWER_AUTH": FLOWER_AUTH}
    proc = subprocess.Popen([sys.executable, "-m", "mediaconduit_worker.cli", "flower"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthcheck", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("flower did not start")
        time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(10)


def _outcome(call: Any, culprit: str | None) -> str:
    """The job's error (re-raised by AsyncResult.get), or its result as JSON when it must succeed."""
    try:
        result = call()
    except Exception as exc:
        if culprit is None:
            raise AssertionError(f"the probe failed: {type(exc).__name__}: {exc}") from None
        return f"{type(exc).__name__}: {exc}"
    if culprit is not None:
        raise AssertionError(f"the probe succeeded: {json.dumps(result)[:500]}")
    return json.dumps(result)


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.id)
def test_probe(probe: Probe, request: pytest.FixtureRequest, attacked_worker, recorder, canary_file,
               echo_url, leaky_url, publish_repo) -> None:
    subs = {"canary_file": str(canary_file), "recorder": recorder.url, "recorder_port": recorder.url.rsplit(":", 1)[1],
            "echo": echo_url, "leaky": leaky_url, "canary_option": CANARY_OPTION}
    payload = _fill(probe.payload, subs)
    provider, model, options = _fill(probe.provider, subs), probe.model, _fill(probe.options, subs)
    hits_before = len(recorder.hits)
    w = attacked_worker

    def _error_of(call: Any) -> str:
        return _outcome(call, probe.culprit)

    if probe.via == "input":
        error = _error_of(lambda: w.run(payload, provider, model, options))
    elif probe.via == "provider":
        error = _error_of(lambda: w.run("x", payload, "upper"))
    elif probe.via == "model":
        error = _error_of(lambda: w.run("x", echo_url, payload))
    elif probe.via == "options":
        error = _error_of(lambda: w.run("x", provider, model, payload))
    elif probe.via == "manifest":
        url = publish_repo(probe.id, payload)
        error = _error_of(lambda: w.run("x", url, "m"))
    elif probe.via == "compose":
        service = publish_repo(probe.id + "-service", payload)
        provider = publish_repo(probe.id + "-provider", {
            "MediaConduit.provider.yml": f"id: {probe.id}\nname: probe\nserviceUrl: {service}\n"
                                         "models: [{id: m, capabilities: [text-to-text]}]\n",
            "provider.py": "from mediaconduit_worker import DockerProvider\n\nclass P(DockerProvider):\n    pass\n",
        })
        error = _error_of(lambda: w.run("x", provider, "m"))
    elif probe.via == "batch":
        from mediaconduit_worker.batch.jsonl import BadLine, parse_line

        parsed = parse_line(7, payload)
        assert isinstance(parsed, BadLine), parsed
        error = str(parsed)
        assert error.startswith("line 7:")
    elif probe.via == "flower":
        base = request.getfixturevalue("flower_api")

        def via_flower() -> Any:
            from mediaconduit_worker.celery_app import app

            reply = httpx.post(f"{base}/api/task/async-apply/mediaconduit.transform", timeout=10,
                               auth=tuple(FLOWER_AUTH.split(":")),
                               json={"args": [payload, provider, model, options or {}], "queue": w.queue})
            assert reply.status_code == 200, reply.text
            return app.AsyncResult(reply.json()["task-id"]).get(timeout=60)

        error = _error_of(via_flower)
    else:
        raise AssertionError(f"unknown probe kind {probe.via!r}")
    assert probe.culprit is None or probe.culprit in error, error
    assert not leaked(error), error
    assert recorder.hits[hits_before:] == []
    good = w.run("still serving", echo_url, "upper")
    assert good["asset"]["content"] == "STILL SERVING"
