"""The OpenAI-compatible media endpoints through the official ``openai`` client: a real gateway process, a
real worker and Redis, and real engines behind routes: textrender (Pillow, in the worker) for images, and
espeak-ng and Whisper in their Docker services for speech and transcription.

The routes file is the default one, ``$MEDIACONDUIT_HOME/routes.yml``, which the gateway and the worker
read; the providers are this repository's reference providers, published as one monorepo."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from conftest import WorkerProcess

from .conftest import API, GatewayProcess, wait_finished

openai = pytest.importorskip("openai", reason="the openai package is in the test extras")

PER_IMAGE = 0.04
CAPABILITIES = ["text-to-image", "text-to-audio", "audio-to-text"]


@pytest.fixture(scope="module")
def routes(reference_url: str) -> Iterator[dict[str, Any]]:
    """Routes ``pictures`` (textrender, priced per image), ``speech`` (espeak) and ``transcribe`` (Whisper),
    and an OpenAI name for each."""
    from mediaconduit_worker.settings import get_settings

    def provider(name: str) -> str:
        return f"git+{reference_url}#subdirectory=providers/{name}-provider"

    spec = {"routes": {
        "pictures": {"candidates": [{"provider": provider("textrender"), "model": "render-png",
                                     "pricing": {"per_image": PER_IMAGE}}]},
        "speech": {"candidates": [{"provider": provider("espeak"), "model": "espeak-default"}]},
        "transcribe": {"candidates": [{"provider": provider("whisper"), "model": "whisper-stt"}]},
    }, "aliases": {"dall-e-3": "pictures", "tts-1": "speech", "whisper-1": "transcribe"}}
    path = get_settings().routes_file
    assert not path.exists(), f"{path} exists: another test left a routes file at the default path"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    yield spec
    path.unlink()


@pytest.fixture(scope="module")
def media_worker(routes) -> Iterator[WorkerProcess]:
    w = WorkerProcess(CAPABILITIES, concurrency=1).wait_ready()
    yield w
    w.stop()


@pytest.fixture
def client(gateway: GatewayProcess, alice: API, media_worker) -> Iterator[Any]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=alice.key, max_retries=0, timeout=300) as c:
        yield c


def dark_pixels(png: bytes) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return sum(image.convert("L").histogram()[:128])


def test_an_image_comes_back_inline_as_the_job_made_it_with_its_cost(client, alice):
    raw = client.images.with_raw_response.generate(model="dall-e-3", prompt="HELLO", response_format="b64_json")
    image = raw.parse()
    (item,) = image.data
    png = base64.b64decode(item.b64_json)
    assert dark_pixels(png) > 0 and item.url is None
    job = wait_finished(alice, raw.headers["X-MediaConduit-Job-Id"])
    assert job["status"] == "succeeded" and job["provider"] == "route:pictures"
    assert job["result"]["asset"]["sha256"] == hashlib.sha256(png).hexdigest()
    prompt = job["result"]["metadata"]["generation_prompt"]
    assert (prompt["input"], prompt["route"], prompt["model_id"]) == ("HELLO", "pictures", "render-png")
    assert job["cost_usd"] == pytest.approx(PER_IMAGE) and float(raw.headers["X-MediaConduit-Cost-USD"]) == PER_IMAGE


def test_an_image_url_is_the_tenants_file_download(client, gateway, alice, bob):
    image = client.images.generate(model="pictures", prompt="BY URL")
    (item,) = image.data
    assert item.url.startswith(f"{gateway.url}/v1/files/") and item.b64_json is None
    mine = httpx.get(item.url, headers={"Authorization": f"Bearer {alice.key}"}, timeout=30)
    assert mine.status_code == 200 and mine.headers["content-type"] == "image/png" and dark_pixels(mine.content) > 0
    assert item.url.endswith(hashlib.sha256(mine.content).hexdigest())
    theirs = httpx.get(item.url, headers={"Authorization": f"Bearer {bob.key}"}, timeout=30)
    assert theirs.status_code == 404


def test_image_requests_are_refused_naming_the_field(client):
    refused = [({"model": "tts-1", "prompt": "x"}, "model", openai.BadRequestError),
               ({"model": "no-such-route", "prompt": "x"}, "model", openai.NotFoundError),
               ({"model": "pictures", "prompt": " "}, "prompt", openai.BadRequestError),
               ({"model": "pictures", "prompt": "x", "n": 2}, "n", openai.BadRequestError),
               ({"model": "pictures", "prompt": "x", "response_format": "png"}, "response_format", openai.BadRequestError),
               ({"model": "pictures", "prompt": "x", "size": "1024x1024"}, "size", openai.BadRequestError)]
    for request, field, error in refused:
        with pytest.raises(error) as err:
            client.images.generate(**request)
        assert err.value.body["param"] == field, (request, err.value.body)
