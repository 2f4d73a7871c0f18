"""A local audio provider for CLI tests and benchmarks: real models run by real workers, no Docker.

``describe`` (audio-to-text) answers with what reached it, read from the blob store: the media type, the
size and the SHA-256 of its bytes, so a test can tell which file an item's job was given. Options:
``sleep`` seconds first, ``log`` a file it appends that digest to (executions counted), ``fail``. ``reverse``
(audio-to-audio) returns the samples of a WAV backwards, a new blob the worker writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

PROVIDER = '''
import hashlib
import time
import wave
import io

from mediaconduit_worker import (Audio, AudioToAudioModel, AudioToTextModel, MediaCapability, MediaProvider, Text,
                                 input_asset)


class Describe(AudioToTextModel):
    """The audio's media type, size and digest, from its bytes in the blob store."""

    def transform(self, input, options=None):
        started = time.perf_counter()
        audio = input_asset(input, Audio)
        data = audio.data
        opts = options or {}
        if opts.get("log"):
            with open(opts["log"], "a") as log:
                log.write(hashlib.sha256(data).hexdigest() + "\\n")
        time.sleep(float(opts.get("sleep", 0)))
        if opts.get("fail"):
            raise ValueError("failed on purpose")
        text = f"{audio.mime_type} {len(data)} {hashlib.sha256(data).hexdigest()}"
        return Text.from_string(text, metadata={"generation_prompt": self.generation_prompt(input, options, started)})


class Reverse(AudioToAudioModel):
    """A WAV with its frames in reverse order."""

    def transform(self, input, options=None):
        started = time.perf_counter()
        audio = input_asset(input, Audio)
        with wave.open(io.BytesIO(audio.data)) as src:
            params, frames = src.getparams(), src.readframes(src.getnframes())
        width = params.sampwidth * params.nchannels
        backwards = b"".join(frames[i:i + width] for i in range(len(frames) - width, -1, -width))
        out = io.BytesIO()
        with wave.open(out, "wb") as dst:
            dst.setparams(params)
            dst.writeframes(backwards)
        return Audio.from_bytes(out.getvalue(), "audio/wav",
                                metadata={"generation_prompt": self.generation_prompt(input, options, started)})


class SoundProvider(MediaProvider):
    model_classes = {MediaCapability.AUDIO_TO_TEXT: Describe, MediaCapability.AUDIO_TO_AUDIO: Reverse}
'''

MANIFEST = {"id": "sound", "name": "Sound", "capabilities": ["audio-to-text", "audio-to-audio"], "main": "provider.py",
            "exportName": "SoundProvider",
            "models": [{"id": "describe", "capabilities": ["audio-to-text"],
                        "parameters": {"fail": {"type": "boolean", "default": False},
                                       "sleep": {"type": "number", "default": 0}, "log": {"type": "string"}}},
                       {"id": "reverse", "capabilities": ["audio-to-audio"]}]}
CAPABILITIES = ["audio-to-text", "audio-to-audio"]


def reversed_wav(data: bytes) -> bytes:
    """What ``reverse`` makes of a WAV, computed here for comparison."""
    import io
    import wave

    with wave.open(io.BytesIO(data)) as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    width = params.sampwidth * params.nchannels
    out = io.BytesIO()
    with wave.open(out, "wb") as dst:
        dst.setparams(params)
        dst.writeframes(b"".join(frames[i:i + width] for i in range(len(frames) - width, -1, -width)))
    return out.getvalue()


@pytest.fixture(scope="module")
def sound_url(tmp_path_factory: Any) -> str:
    """The sound provider, published as a git repository of its own."""
    import yaml
    from conftest import publish

    folder = tmp_path_factory.mktemp("sound")
    (folder / "MediaConduit.provider.yml").write_text(yaml.safe_dump(MANIFEST))
    (folder / "provider.py").write_text(PROVIDER)
    return publish(folder, f"sound-{uuid.uuid4().hex[:6]}", org="tests")


@pytest.fixture(scope="module")
def sound_worker(redis_server: Any) -> Iterator[Any]:
    """A worker for the sound provider's capabilities."""
    from conftest import WorkerProcess

    w = WorkerProcess(CAPABILITIES, concurrency=2).wait_ready()
    yield w
    w.stop()
