"""The OpenAI-compatible media endpoints through the official ``openai`` client: a real gateway process, a
real worker and Redis, and real engines behind routes: textrender (Pillow, in the worker) for images, and
espeak-ng and Whisper in their Docker services for speech and transcription.

The routes file is the default one, ``$MEDIACONDUIT_HOME/routes.yml``, which the gateway and the worker
read; the providers are this repository's reference providers, published as one monorepo."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import WorkerProcess

from .conftest import API, MAX_UPLOAD, GatewayProcess, default_routes_file, wait_finished

openai = pytest.importorskip("openai", reason="the openai package is in the test extras")

PER_IMAGE = 0.04
PER_CHARACTER = 1e-5
CAPABILITIES = ["text-to-image", "text-to-audio", "audio-to-text"]


@pytest.fixture(scope="module")
def routes(reference_url: str) -> Iterator[dict[str, Any]]:
    """Routes ``pictures`` (textrender, priced per image), ``speech`` (espeak, per character) and ``transcribe``
    (Whisper),
    and an OpenAI name for each."""

    def provider(name: str) -> str:
        return f"git+{reference_url}#subdirectory=providers/{name}-provider"

    spec = {"routes": {
        "pictures": {"candidates": [{"provider": provider("textrender"), "model": "render-png",
                                     "pricing": {"per_image": PER_IMAGE}}]},
        "speech": {"candidates": [{"provider": provider("espeak"), "model": "espeak-default",
                                   "pricing": {"per_character": PER_CHARACTER}}]},
        "transcribe": {"candidates": [{"provider": provider("whisper"), "model": "whisper-stt"}]},
    }, "aliases": {"dall-e-3": "pictures", "tts-1": "speech", "whisper-1": "transcribe"}}
    with default_routes_file(spec):
        yield spec


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


SENTENCE = "my name is john and i live in a small house near the river"
# espeak-ng's en-us+f2 voice at 120 wpm is what PocketSphinx's English model hears best (deterministic).
SPEECH = ["-v", "en-us+f2", "-s", "120"]


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> bytes:
    """SENTENCE spoken by the host's espeak-ng (scripts/ci-setup.sh installs it), as a WAV."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed on this host (scripts/ci-setup.sh installs it)", pytrace=False)
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", *SPEECH, "-w", str(path), SENTENCE], check=True, capture_output=True, timeout=60)
    return path.read_bytes()


@pytest.mark.docker
def test_speech_is_the_audio_espeak_made_with_its_media_type(docker_engine, client, alice):
    raw = client.audio.speech.with_raw_response.create(model="tts-1", voice="en-us", input=SENTENCE)
    audio = raw.parse().content
    assert raw.headers["content-type"] == "audio/wav" and audio[:4] == b"RIFF" and wav_seconds(audio) > 1
    job = wait_finished(alice, raw.headers["X-MediaConduit-Job-Id"])
    assert job["status"] == "succeeded" and job["provider"] == "route:speech"
    assert job["result"]["asset"]["sha256"] == hashlib.sha256(audio).hexdigest()
    prompt = job["result"]["metadata"]["generation_prompt"]
    assert (prompt["input"], prompt["options"], prompt["route"]) == (SENTENCE, {"voice": "en-us"}, "speech")
    assert job["cost_usd"] == pytest.approx(len(SENTENCE) * PER_CHARACTER)
    assert float(raw.headers["X-MediaConduit-Cost-USD"]) == pytest.approx(job["cost_usd"])
    with pytest.raises(openai.APIStatusError) as alloy:
        client.audio.speech.create(model="speech", voice="alloy", input="hello")
    assert alloy.value.status_code == 502 and alloy.value.body["code"] == "job_failed"
    assert "espeak-ng failed for voice 'alloy'" in alloy.value.message  # a voice is the model's own, not OpenAI's
    with pytest.raises(openai.BadRequestError) as mp3:
        client.audio.speech.create(model="speech", voice="en-us", input="hello", response_format="mp3")
    assert mp3.value.body["param"] == "response_format" and "made audio/wav" in mp3.value.message


@pytest.mark.docker
def test_an_uploaded_recording_is_transcribed_by_whisper(docker_engine, client, alice, recording):
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("speech.wav", recording, "audio/wav"), language="en")
    text = raw.parse().text
    heard = [w for w in SENTENCE.split() if w in text.lower().split()]
    assert len(heard) >= len(SENTENCE.split()) / 2, f"heard {text!r}"
    job = wait_finished(alice, raw.headers["X-MediaConduit-Job-Id"])
    assert job["status"] == "succeeded" and job["provider"] == "route:transcribe"
    prompt = job["result"]["metadata"]["generation_prompt"]
    assert prompt["input"]["type"] == "audio" and prompt["input"]["sha256"] == hashlib.sha256(recording).hexdigest()
    assert prompt["options"] == {"language": "en"} and prompt["route"] == "transcribe"
    plain = client.audio.transcriptions.create(model="transcribe", file=("speech.wav", recording, "audio/wav"),
                                               language="en", response_format="text")
    assert isinstance(plain, str) and plain.strip() == text.strip()


def test_speech_and_transcription_requests_are_refused_naming_the_field(client, recording):
    speech = [({"model": "pictures", "voice": "en-us", "input": "x"}, "model"),
              ({"model": "speech", "voice": "en-us", "input": " "}, "input"),
              ({"model": "speech", "voice": "en-us", "input": "x", "response_format": "ogg"}, "response_format"),
              ({"model": "speech", "voice": "en-us", "input": "x", "speed": 1.5}, "speed")]
    for request, field in speech:
        with pytest.raises(openai.BadRequestError) as err:
            client.audio.speech.create(**request)
        assert err.value.body["param"] == field, (request, err.value.body)
    upload = ("speech.wav", recording, "audio/wav")
    transcription = [({"model": "speech", "file": upload}, "model"),
                     ({"model": "transcribe", "file": upload, "response_format": "srt"}, "response_format"),
                     ({"model": "transcribe", "file": upload, "temperature": 0.2}, "temperature"),
                     ({"model": "transcribe", "file": upload, "timestamp_granularities": ["word", "segment"]},
                      "timestamp_granularities[]")]
    for request, field in transcription:
        with pytest.raises(openai.BadRequestError) as err:
            client.audio.transcriptions.create(**request)
        assert err.value.body["param"] == field, (request, err.value.body)
    with pytest.raises(openai.APIStatusError) as big:
        client.audio.transcriptions.create(model="transcribe", file=("big.wav", bytes(MAX_UPLOAD + 128 * 1024), "audio/wav"))
    assert big.value.status_code == 413 and big.value.body["param"] == "file"
    assert "MEDIACONDUIT_GATEWAY_MAX_UPLOAD_BYTES" in big.value.message
