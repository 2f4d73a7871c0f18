"""The toolkit with Docker providers, on a real engine: validate (build, start on a Docker-assigned port, health,
stop), a broken service, the --docker scaffold through a worker, replay of Docker chains and their records.

Skips without an engine; fails instead when MEDIACONDUIT_REQUIRE_DOCKER=1 (CI).
"""

from __future__ import annotations

import uuid

import pytest
from conftest import WorkerProcess, publish
from support.toolkit import assert_record, prompts, replay, run_cli, validate

pytestmark = pytest.mark.docker
DOCKER_PROVIDERS = ["cowsay", "espeak", "whisper", "tesseract", "ffmpeg"]
MEDIA = ["text-to-text", "text-to-image", "image-to-text", "text-to-audio", "audio-to-text", "video-to-audio"]


def service_containers(client, service_id: str):
    from mediaconduit_worker.services.labels import SCOPE, SERVICE, scope

    return client.containers.list(all=True, filters={"label": [f"{SERVICE}={service_id}", f"{SCOPE}={scope()}"]})


@pytest.fixture(scope="module")
def urls(provider_urls) -> dict[str, str]:
    """Every Docker reference provider, each a folder of the published monorepo."""
    return provider_urls


# -- validate ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DOCKER_PROVIDERS)
def test_docker_reference_providers_validate_and_stop_their_service(name, docker_engine, urls):
    code, checks, report = validate(urls[name])
    assert code == 0, report
    service = checks["service"]
    assert service["status"] == "pass" and "assigned by Docker" in service["detail"], service
    assert checks["transform"]["status"] == "pass" and checks["secrets"]["status"] == "pass"
    if "left running" not in service["detail"]:
        assert "stopped mediaconduit-" in service["detail"]
        assert service_containers(docker_engine, f"{name}-service") == []


UNHEALTHY = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503); self.end_headers()
http.server.HTTPServer(("0.0.0.0", 8000), H).serve_forever()
"""


def test_a_service_that_never_becomes_healthy_fails_the_service_check(docker_engine, tmp_path, make_provider):
    folder = tmp_path / f"sick-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "MediaConduit.service.yml").write_text(
        f"id: {folder.name}\nname: {folder.name}\ndocker:\n  build: .\n  ports: [8000]\n"
        "  healthCheck:\n    endpoint: /health\n    startupTimeout: 3\n")
    (folder / "Dockerfile").write_text("ARG BASE_IMAGE=python:3.12-slim\nFROM ${BASE_IMAGE}\nCOPY server.py /s.py\n"
                                       'CMD ["python3", "-u", "/s.py"]\n')
    (folder / "server.py").write_text(UNHEALTHY)
    service = publish(folder, folder.name, org="tests")
    url = make_provider("sick", {
        "id": "sick", "name": "Sick", "capabilities": ["text-to-text"], "serviceUrl": service,
        "models": [{"id": "m", "capabilities": ["text-to-text"]}], "main": "provider.py"},
        {"provider.py": "from mediaconduit_worker import *\n\nclass M(TextToTextModel):\n"
                        "    def transform(self, input, options=None):\n        return Text.from_string(input_text(input))\n\n"
                        "class P(DockerProvider):\n    model_classes = {MediaCapability.TEXT_TO_TEXT: M}\n"})
    code, checks, report = validate(url)
    assert code == 1
    assert checks["service"]["status"] == "fail" and "did not become healthy" in checks["service"]["detail"]
    assert "503" in checks["service"]["detail"]
    assert checks["transform"]["status"] == "skip"
    assert service_containers(docker_engine, folder.name) == []


# -- through a worker -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def media_worker(urls):
    w = WorkerProcess(MEDIA, concurrency=2).wait_ready()
    yield w
    w.stop()


def test_the_docker_scaffold_validates_and_runs_through_a_worker(docker_engine, media_worker, tmp_path):
    from mediaconduit_worker import transform

    name = f"dock{uuid.uuid4().hex[:4]}"
    service_url = f"https://github.com/tests/{name}-service"
    code, _, output = run_cli("providers", "new", name, "--docker", "--capability", "text-to-text",
                              "--capability", "image-to-text", "--service-url", service_url, "--dir", str(tmp_path))
    assert code == 0, output
    compose = (tmp_path / f"{name}-service" / "docker-compose.yml").read_text()
    assert f"${{{name.upper()}_HOST_PORT:-0}}:8000" in compose
    assert "ARG BASE_IMAGE" in (tmp_path / f"{name}-service" / "Dockerfile").read_text()
    assert publish(tmp_path / f"{name}-service", f"{name}-service", org="tests") == service_url
    url = publish(tmp_path / f"{name}-provider", f"{name}-provider", org="tests")

    code, checks, report = validate(url)
    assert code == 0, report
    assert checks["service"]["status"] == "pass"

    result = transform.delay("hello docker", url, f"{name}-text-to-text").get(timeout=300)
    assert result["asset"]["content"] == "HELLO DOCKER"
    assert_record(result)
    assert result["metadata"]["generation_prompt"]["service"]["url"] == service_url


# -- replay and the record --------------------------------------------------------------------------
def test_cowsay_replays_byte_for_byte_on_the_recorded_service_commit(media_worker, provider_urls, service_urls, tmp_path):
    from mediaconduit_worker import transform

    result = transform.delay("moo", provider_urls["cowsay"], "cowsay-default", {"animal": "tux"}).get(timeout=300)
    assert_record(result)
    service = result["metadata"]["generation_prompt"]["service"]
    assert service["url"] == service_urls["cowsay"]  # the monorepo folder, at its commit
    assert service["image_id"].startswith("sha256:") and len(service["commit"]) == 40

    code, report, output = replay(result, tmp_path, "--verify")
    assert code == 0, output
    assert report["steps"][0]["same"]
    again = report["result"]["metadata"]["generation_prompt"]["service"]
    assert again["commit"] == service["commit"] and again["url"] == service["url"]  # already pinned to that commit


def test_textrender_then_tesseract_replays_byte_for_byte(media_worker, provider_urls, tmp_path):
    from celery import chain

    from mediaconduit_worker import transform

    result = chain(transform.s("Replay 2026", provider_urls["textrender"], "render-png"),
                   transform.s(provider_urls["tesseract"], "tesseract-ocr")).delay().get(timeout=300)
    assert result["asset"]["content"] == "Replay 2026"
    assert_record(result)
    code, report, output = replay(result, tmp_path, "--verify")
    assert code == 0, output
    assert [r["same"] for r in report["steps"]] == [True, True]
    assert [p["model_id"] for p in prompts(report["result"])] == ["render-png", "tesseract-ocr"]


def test_speech_chain_record(media_worker, provider_urls):
    """espeak → whisper: audio travels as a blob; both steps carry their service build."""
    from celery import chain

    from mediaconduit_worker import transform

    result = chain(transform.s("my name is john", provider_urls["espeak"], "espeak-default",
                               {"voice": "en-us+f2", "speed": 120}),
                   transform.s(provider_urls["whisper"], "whisper-stt", {"language": "en"})).delay().get(timeout=300)
    assert_record(result)
    first, second = prompts(result)
    assert first["service"]["id"] == "espeak-service" and second["service"]["id"] == "whisper-service"
    assert second["input_digest"] == first["output_digest"] == second["input"]["sha256"]


def test_a_media_input_replays_from_its_blob_and_is_refused_once_gone(media_worker, urls, tmp_path):
    """A video uploaded to the blob store → ffmpeg extract-audio: replay finds the video by its digest."""
    from mediaconduit_worker import transform
    from mediaconduit_worker.blobs import BlobStore
    from mediaconduit_worker.cli.validate import sample_video

    video = sample_video()
    uri, digest = BlobStore().put(video)
    asset = {"type": "video", "uri": uri, "sha256": digest, "size": len(video), "mime_type": "video/mp4"}
    result = transform.delay(asset, urls["ffmpeg"], "extract-audio", {"sample_rate": 16000}).get(timeout=300)
    assert_record(result)
    prompt = result["metadata"]["generation_prompt"]
    assert prompt["input_digest"] == digest and prompt["service"]["id"] == "ffmpeg-service"

    code, report, output = replay(result, tmp_path, "--verify")
    assert code == 0, output
    assert report["steps"][0]["same"]

    BlobStore().path_for(digest).unlink()
    code, _, output = replay(result, tmp_path, "--verify")
    assert code == 1 and f"blob sha256:{digest}" in output and "is gone" in output
