"""Text to speech through the espeak-service container: WAV ``Audio`` out."""

from __future__ import annotations

import io
import time
import wave
from typing import Any

from mediaconduit_worker import Audio, DockerProvider, MediaCapability, TextToAudioModel, input_text


def wav_info(data: bytes) -> dict[str, Any]:
    with wave.open(io.BytesIO(data)) as w:
        return {"sample_rate": w.getframerate(), "channels": w.getnchannels(),
                "duration_s": round(w.getnframes() / float(w.getframerate() or 1), 3)}


class EspeakModel(TextToAudioModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Audio:
        started = time.perf_counter()
        opts = dict(options or {})
        body: dict[str, Any] = {"text": input_text(input), "voice": str(opts.get("voice", "en-us"))}
        for key in ("speed", "pitch"):
            if key in opts:
                try:
                    body[key] = int(opts[key])
                except (TypeError, ValueError):
                    raise ValueError(f"option {key!r} must be an integer, not {opts[key]!r}") from None
        assert isinstance(self.provider, EspeakDockerProvider)
        data, mime = self.provider.client().request_bytes("POST", "/synthesize", json=body)
        if not data.startswith(b"RIFF"):
            raise ValueError(f"espeak-service returned {mime}, not a WAV file")
        info = wav_info(data)
        prompt = self.generation_prompt(input, opts, started, service=self.provider.service_metadata())
        return Audio(data=data, mime_type="audio/wav", metadata={"generation_prompt": prompt, **info})


class EspeakDockerProvider(DockerProvider):
    model_classes = {MediaCapability.TEXT_TO_AUDIO: EspeakModel}
    service_timeout = 120
