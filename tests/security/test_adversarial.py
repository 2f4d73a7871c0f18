"""Every probe in ``probes.py`` against a real worker: a clear error naming the culprit, no canary read
or fetched, and the same worker serving a good job afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.flower import running_flower

from .conftest import CANARY_OPTION, leaked
from .probes import DOCKER_MAIN, PROBES, SERVICE_MANIFEST, Link, Probe

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
    if isinstance(value, Link):
        return Link(_fill(value.target, subs))
    return value


@pytest.fixture(scope="module")
def flower_api() -> Iterator[str]:
    """Flower on loopback with basic auth, as deployed; the probes come in as an operator's API calls."""
    with running_flower(FLOWER_AUTH) as (base, _, _):
        yield base


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
        if not isinstance(payload, dict):  # the compose file itself, beside a fixed service manifest
            payload = {"MediaConduit.service.yml": SERVICE_MANIFEST, "docker-compose.yml": payload}
        service = publish_repo(probe.id + "-service", payload)
        provider = publish_repo(probe.id + "-provider", {
            "MediaConduit.provider.yml": f"id: {probe.id}\nname: probe\nserviceUrl: {service}\n"
                                         "models: [{id: m, capabilities: [text-to-text]}]\n",
            "provider.py": DOCKER_MAIN,
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
