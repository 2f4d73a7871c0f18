"""Docker services for real: a real engine, real containers, jobs through Redis to real worker processes.

Skips without an engine; fails instead when MEDIACONDUIT_REQUIRE_DOCKER=1 (CI).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, WorkerProcess, publish

pytestmark = pytest.mark.docker
MEDIA_CAPABILITIES = ["text-to-audio", "audio-to-text", "text-to-image", "image-to-text", "text-to-text"]
SENTENCE = "my name is john and i live in a small house near the river"
# espeak-ng's en-us+f2 voice at 120 wpm is what PocketSphinx's English model hears best (deterministic).
SPEECH = {"voice": "en-us+f2", "speed": 120}


@pytest.fixture(scope="module")
def media_worker(provider_urls):
    w = WorkerProcess(MEDIA_CAPABILITIES, concurrency=2).wait_ready()
    yield w
    w.stop()


def containers(client, service_id: str):
    from mediaconduit_worker.services.labels import SCOPE, SERVICE, scope

    return client.containers.list(all=True, filters={"label": [f"{SERVICE}={service_id}", f"{SCOPE}={scope()}"]})


def publish_service(tmp_path: Path, server: str, startup_timeout: float = 5) -> str:
    """A throw-away service repository whose server is ``server`` (Python source)."""
    folder = tmp_path / f"svc-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "MediaConduit.service.yml").write_text(
        f"id: {folder.name}\nname: {folder.name}\ndocker:\n  build: .\n  ports: [8000]\n"
        f"  healthCheck:\n    endpoint: /health\n    startupTimeout: {startup_timeout}\n"
    )
    (folder / "Dockerfile").write_text(
        "ARG BASE_IMAGE=python:3.12-slim\nFROM ${BASE_IMAGE}\nCOPY server.py /server.py\n"
        'CMD ["python3", "-u", "/server.py"]\n'
    )
    (folder / "server.py").write_text(server)
    return publish(folder, folder.name, org="tests")


HEALTH_503 = """
import http.server
print("BOOT-MARKER model cache is empty, refusing to become healthy", flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503); self.end_headers()
http.server.HTTPServer(("0.0.0.0", 8000), H).serve_forever()
"""

EXITS = """
import sys
print("fatal: EXIT-MARKER cannot load the model", flush=True)
sys.exit(3)
"""

DOCKER_PROVIDER = """
from mediaconduit_worker import DockerProvider, MediaCapability, Text, TextToTextModel, input_text

class M(TextToTextModel):
    def transform(self, input, options=None):
        return Text.from_string(input_text(input))

class P(DockerProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: M}
"""


# -- through the queue ---------------------------------------------------------------------------
def test_speech_to_text_chain_keeps_both_prompts(media_worker, provider_urls):
    from mediaconduit_worker import transform
    from mediaconduit_worker.blobs import BlobStore

    speech = transform.delay(SENTENCE, provider_urls["espeak"], "espeak-default", SPEECH).get(timeout=300)
    audio = speech["asset"]
    assert audio["type"] == "audio" and audio["mime_type"] == "audio/wav" and audio["uri"].startswith("blob://")
    data = BlobStore().get(audio["uri"])  # binary media travel by reference, stored content-addressed
    assert data[:4] == b"RIFF" and len(data) == audio["size"] and hashlib.sha256(data).hexdigest() == audio["sha256"]
    assert audio["metadata"]["duration_s"] > 1

    chain = transform.s(SENTENCE, provider_urls["espeak"], "espeak-default", SPEECH) | transform.s(
        provider_urls["whisper"], "whisper-stt", {"language": "en"})
    final = chain.delay().get(timeout=300)
    heard = final["asset"]["content"].lower().split()
    recovered = [w for w in SENTENCE.split() if w in heard]
    assert len(recovered) >= len(SENTENCE.split()) / 2, f"heard {final['asset']['content']!r}"
    prompt = final["metadata"]["generation_prompt"]
    assert prompt["model_id"] == "whisper-stt" and prompt["service"]["id"] == "whisper-service"
    first = prompt["input"]["metadata"]["generation_prompt"]
    assert prompt["input"]["type"] == "audio" and prompt["input"]["uri"].startswith("blob://")
    assert first["model_id"] == "espeak-default" and first["input"] == SENTENCE and first["options"] == SPEECH


def test_rendered_text_comes_back_through_ocr(media_worker, provider_urls):
    from mediaconduit_worker import transform

    text = "Hello MediaConduit 2026"
    chain = transform.s(text, provider_urls["textrender"], "render-png") | transform.s(
        provider_urls["tesseract"], "tesseract-ocr")
    result = chain.delay().get(timeout=300)
    assert result["asset"]["content"] == text
    assert result["metadata"]["generation_prompt"]["input"]["mime_type"] == "image/png"


def test_two_workers_share_one_container(docker_engine, provider_urls, start_worker):
    from mediaconduit_worker import transform
    from mediaconduit_worker.services import ServiceRegistry

    ServiceRegistry().stop("cowsay-service")  # cold: both workers race to start it
    # A queue nobody else serves, so the two new workers get every job.
    workers = [start_worker(["text-to-video"], concurrency=1) for _ in range(2)]
    opts = {"capability": "text-to-video", "animal": "tux"}
    pending = [transform.delay(f"job {i}", provider_urls["cowsay"], "cowsay-default", opts) for i in range(6)]
    results = [p.get(timeout=300) for p in pending]
    assert all("job" in r["asset"]["content"] for r in results)
    assert {r["metadata"]["worker"] for r in results} == {w.hostname for w in workers}
    found = containers(docker_engine, "cowsay-service")
    assert len(found) == 1, [c.name for c in found]
    assert found[0].logs().decode().count("POST /cowsay") == 6


def test_killed_container_is_restarted_on_next_job(media_worker, provider_urls, docker_engine):
    from mediaconduit_worker import transform

    transform.delay("before", provider_urls["cowsay"], "cowsay-default").get(timeout=300)
    [old] = [c for c in containers(docker_engine, "cowsay-service") if c.status == "running"]
    old.kill()
    result = transform.delay("after", provider_urls["cowsay"], "cowsay-default").get(timeout=120)
    assert "after" in result["asset"]["content"]
    [new] = containers(docker_engine, "cowsay-service")
    assert new.id != old.id and new.status == "running"


def test_service_that_never_gets_healthy_fails_with_its_logs(media_worker, docker_engine, make_provider, tmp_path):
    from mediaconduit_worker import transform
    from mediaconduit_worker.errors import ServiceError

    service = publish_service(tmp_path, HEALTH_503, startup_timeout=4)
    provider = make_provider("unhealthy", {
        "id": "unhealthy", "name": "Unhealthy", "type": "local", "capabilities": ["text-to-text"],
        "serviceUrl": service, "models": [{"id": "m", "capabilities": ["text-to-text"]}], "main": "provider.py",
    }, {"provider.py": DOCKER_PROVIDER})
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        transform.delay("x", provider, "m").get(timeout=120)
    message = str(err.value)
    assert type(err.value).__name__ == ServiceError.__name__, message
    assert "did not become healthy within 4s" in message and "HTTP 503" in message
    assert "BOOT-MARKER model cache is empty" in message  # the tail of the container's logs
    assert time.monotonic() - started < 60
    assert containers(docker_engine, service.rsplit("/", 1)[1]) == []  # nothing left behind


def test_container_that_exits_fails_with_exit_code_and_logs(docker_engine, tmp_path):
    from mediaconduit_worker.errors import ServiceError
    from mediaconduit_worker.services import ServiceRegistry

    service = publish_service(tmp_path, EXITS)
    with pytest.raises(ServiceError, match=r"exited with code 3(.|\n)*EXIT-MARKER cannot load the model"):
        ServiceRegistry().ensure(service, origin="test")


# -- lifecycle, in this process ---------------------------------------------------------------------
def test_attach_reuses_and_rebuild_only_on_new_commit(docker_engine, tmp_path, caplog):
    from mediaconduit_worker.services import ServiceRegistry

    folder = tmp_path / "echo-svc"
    folder.mkdir()
    for name in ("MediaConduit.service.yml", "docker-compose.yml", "Dockerfile", "server.py"):
        (folder / name).write_bytes((REPO / "services" / "cowsay-service" / name).read_bytes())
    name = f"cowsay-copy-{uuid.uuid4().hex[:6]}"
    url = publish(folder, name, org="tests")
    caplog.set_level(logging.INFO, logger="mediaconduit_worker")
    first = ServiceRegistry().ensure(url)
    assert any("building" in r.getMessage() for r in caplog.records)
    assert first.ports[0] > 0 and first.base_url == f"http://127.0.0.1:{first.ports[0]}"
    caplog.clear()
    again = ServiceRegistry().ensure(url)  # a fresh process-level registry: attaches, builds nothing
    assert again.container_id == first.container_id and again.ports == first.ports
    assert not any("building" in r.getMessage() for r in caplog.records)
    (folder / "README.md").write_text("a new commit\n")
    publish(folder, name, org="tests")
    from mediaconduit_worker.sources import SourceCache, parse_source

    SourceCache().materialise(parse_source(url), update=True)  # as `mediaconduit providers update` does
    caplog.clear()
    moved = ServiceRegistry().ensure(url)
    assert moved.commit != first.commit and moved.container_id != first.container_id
    assert any("building" in r.getMessage() for r in caplog.records)
    assert len(containers(docker_engine, "cowsay-service")) >= 1
    ServiceRegistry().stop(moved.container_name)


def test_default_limits_apply_and_a_container_with_other_limits_is_replaced(docker_engine, service_urls, monkeypatch,
                                                                           caplog):
    """cowsay's manifest and compose file set no limits: the settings' defaults apply, and a running
    container whose limits differ from what the settings now say is replaced, not attached to."""
    from mediaconduit_worker.cli import main
    from mediaconduit_worker.services import ServiceRegistry
    from mediaconduit_worker.settings import get_settings

    first = ServiceRegistry().ensure(service_urls["cowsay"])
    host = docker_engine.containers.get(first.container_id).attrs["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["PidsLimit"]) == (2 << 30, 2 << 30, 10 ** 9, 256)
    monkeypatch.setattr(get_settings(), "service_memory", "300m")
    monkeypatch.setattr(get_settings(), "service_pids", 64)
    caplog.set_level(logging.WARNING, logger="mediaconduit_worker")
    moved = ServiceRegistry().ensure(service_urls["cowsay"])
    assert moved.container_id != first.container_id
    assert any("its limits" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    host = docker_engine.containers.get(moved.container_id).attrs["HostConfig"]
    assert (host["Memory"], host["PidsLimit"]) == (300 << 20, 64)
    proc = CliRunner().invoke(main, ["services", "ls", "--json"])
    row = next(r for r in json.loads(proc.output) if r["container"] == moved.container_name)
    assert row["limits"] == {"memory": 300 << 20, "cpus": 1.0, "pids": 64}, row
    ServiceRegistry().stop(moved.container_name)


def test_cli_ls_logs_stop_and_idle_reaping(docker_engine, service_urls):
    from mediaconduit_worker.cli import main
    from mediaconduit_worker.services import ServiceRegistry, get_service_registry

    ServiceRegistry().stop("tesseract-service")  # a fresh container: its start-up line is in the tail of its logs
    info = get_service_registry().ensure(service_urls["tesseract"])
    runner = CliRunner()
    listed = runner.invoke(main, ["services", "ls", "--json"])
    assert listed.exit_code == 0, listed.output
    assert info.container_name in listed.output and f"127.0.0.1:{info.ports[0]}" in listed.output
    logs = runner.invoke(main, ["services", "logs", "tesseract-service", "-n", "200"])  # earlier modules used it too
    assert logs.exit_code == 0 and "listening" in logs.output
    missing = runner.invoke(main, ["services", "logs", "no-such-service"])
    assert missing.exit_code != 0 and "no MediaConduit service container matches 'no-such-service'" in missing.output

    registry = ServiceRegistry()
    assert registry.reap_idle(idle_timeout=3600) == []  # just used
    usage = registry._usage_file(info.key)
    os.utime(usage, (time.time() - 7200, time.time() - 7200))
    assert registry.reap_idle(idle_timeout=3600) == [info.container_name]
    assert containers(docker_engine, "tesseract-service") == []
    again = get_service_registry().ensure(service_urls["tesseract"])  # the next job starts it again
    assert again.container_id != info.container_id
    stopped = runner.invoke(main, ["services", "stop", "tesseract-service"])
    assert stopped.exit_code == 0 and again.container_name in stopped.output
    assert containers(docker_engine, "tesseract-service") == []
