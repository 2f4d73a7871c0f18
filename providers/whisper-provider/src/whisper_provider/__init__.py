"""Audio to text over the whisper ASR webservice API (``POST /asr``, multipart ``audio_file``).

Only that API is used, so the provider works unchanged against the real
``onerahmet/openai-whisper-asr-webservice`` image and against the offline pocketsphinx service.
Any audio ffmpeg reads (WAV, MP3, Ogg, FLAC, WebM, M4A) is sent as is; the service converts it. The
worker's duration cap goes along as ``max_seconds`` (the offline service enforces it, the original
ignores it); a WAV or FLAC header over it was already refused when the job's input was read.
"""

from __future__ import annotations

import time
from typing import Any

from mediaconduit_worker import (
    Audio,
    AudioToTextModel,
    DockerProvider,
    MediaCapability,
    ProviderExecutionError,
    ProviderHTTPError,
    Text,
    cap_error,
    input_asset,
    media_caps,
)

TASKS = ("transcribe", "translate")
EXTENSIONS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mpeg": "mp3", "audio/ogg": "ogg",
              "audio/flac": "flac", "audio/webm": "webm", "audio/mp4": "m4a"}


class WhisperModel(AudioToTextModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = dict(options or {})
        audio = input_asset(input, Audio)
        task = str(opts.get("task", "transcribe"))
        if task not in TASKS:
            raise ValueError(f"option 'task' must be one of {TASKS}, not {task!r}")
        params: dict[str, str] = {"task": task, "output": "json", "encode": "true",
                                  "max_seconds": media_caps()["max_seconds"]}
        language = str(opts.get("language") or "auto")
        if language != "auto":
            params["language"] = language
        if opts.get("wordTimestamps") or opts.get("word_timestamps"):
            params["word_timestamps"] = "true"
        if opts.get("initialPrompt") or opts.get("initial_prompt"):
            params["initial_prompt"] = str(opts.get("initialPrompt") or opts.get("initial_prompt"))
        assert isinstance(self.provider, WhisperDockerProvider)
        name = f"audio.{EXTENSIONS.get(audio.mime_type, 'bin')}"
        with audio.open() as fh:  # streamed from the blob store, not read into memory
            try:
                response = self.provider.client().request("POST", "/asr", params=params,
                                                          files={"audio_file": (name, fh, audio.mime_type)})
            except ProviderHTTPError as exc:
                raise cap_error(exc, "whisper /asr") or exc from None
        try:
            result = response.json()
        except ValueError:
            raise ProviderExecutionError(f"whisper service answered /asr with non-JSON: {response.text[:200]!r}") from None
        text = str(result.get("text", "")).strip()
        extra = {"service": self.provider.service_metadata(), "asr_engine": response.headers.get("asr-engine"),
                 "segments": len(result.get("segments") or [])}
        prompt = self.generation_prompt(input, opts, started, **extra)
        return Text.from_string(text, language=str(result.get("language") or language),
                                metadata={"generation_prompt": prompt, "segments": result.get("segments") or []})


class WhisperDockerProvider(DockerProvider):
    model_classes = {MediaCapability.AUDIO_TO_TEXT: WhisperModel}
    service_timeout = 300
