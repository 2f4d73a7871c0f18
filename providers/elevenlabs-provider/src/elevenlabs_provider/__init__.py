"""ElevenLabs: text-to-speech where each voice is a model; the key goes in the ``xi-api-key`` header."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from mediaconduit_worker import (
    Audio,
    ConfigurationError,
    InvalidInputError,
    MediaCapability,
    ProviderModel,
    ProviderResponseError,
    RemoteProvider,
    Text,
    TextToAudioModel,
    input_text,
)

DEFAULT_TTS_MODEL = "eleven_multilingual_v2"
DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"
FORMAT_MIME = {"mp3": "audio/mpeg", "pcm": "audio/L16", "ulaw": "audio/basic", "alaw": "audio/basic",
               "opus": "audio/ogg", "wav": "audio/wav"}
VOICE_SETTINGS = {"stability": "stability", "similarityBoost": "similarity_boost", "similarity_boost": "similarity_boost",
                  "style": "style", "useSpeakerBoost": "use_speaker_boost", "use_speaker_boost": "use_speaker_boost",
                  "speed": "speed"}


class ElevenLabsVoiceModel(TextToAudioModel):
    """``POST /v1/text-to-speech/{voice_id}``; the audio bytes become an ``Audio`` asset (a blob)."""

    provider: ElevenLabsProvider

    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Audio:
        started = time.perf_counter()
        self.provider.ensure_configured()
        opts = dict(options or {})
        text = input_text(input)
        if not text.strip():
            raise InvalidInputError("ElevenLabs needs non-empty text to speak")
        output_format = str(opts.get("outputFormat", opts.get("output_format", DEFAULT_OUTPUT_FORMAT)))
        tts_model = str(opts.get("modelId", opts.get("model_id", self.provider.config.get("model_id") or DEFAULT_TTS_MODEL)))
        body: dict[str, Any] = {"text": text, "model_id": tts_model}
        settings = {api: opts[key] for key, api in VOICE_SETTINGS.items() if key in opts}
        if settings:
            body["voice_settings"] = settings
        for key in ("seed", "language_code"):
            if key in opts:
                body[key] = opts[key]
        response = self.provider.http.request(
            "POST", f"/v1/text-to-speech/{quote(self.id, safe='')}",
            json=body, params={"output_format": output_format}, headers={"Accept": "audio/*"},
        )
        content_type = response.headers.get("content-type", "").split(";")[0]
        if not response.content or not (content_type.startswith("audio/") or content_type == "application/octet-stream"):
            raise ProviderResponseError(
                f"{self.provider.label}: text-to-speech returned {content_type or 'no content type'}, not audio"
            )
        mime = content_type if content_type.startswith("audio/") else FORMAT_MIME.get(output_format.split("_")[0], "audio/mpeg")
        characters = response.headers.get("character-cost") or response.headers.get("x-character-count")
        metadata: dict[str, Any] = {
            "voice_id": self.id,
            "voice_name": self.name,
            "tts_model": tts_model,
            "output_format": output_format,
            "usage": {"characters": int(characters) if characters and characters.isdigit() else len(text)},
        }
        if response.headers.get("request-id"):
            metadata["request_id"] = response.headers["request-id"]
        metadata["generation_prompt"] = self.generation_prompt(input, options, started)
        return Audio.from_bytes(response.content, mime, metadata=metadata,  # type: ignore[return-value]
                                source=input if isinstance(input, Text) else None)


class ElevenLabsProvider(RemoteProvider):
    """Voices from ``GET /v1/voices`` are the models; a job may name a voice by id or by name."""

    config_env = {
        "api_key": "ELEVENLABS_API_KEY",
        "base_url": "ELEVENLABS_BASE_URL",
        "timeout": "ELEVENLABS_TIMEOUT",
        "model_id": "ELEVENLABS_MODEL_ID",
        "price_per_1k_characters": "ELEVENLABS_PRICE_PER_1K_CHARACTERS",
    }
    default_base_url = "https://api.elevenlabs.io"
    model_classes = {MediaCapability.TEXT_TO_AUDIO: ElevenLabsVoiceModel}

    def auth_headers(self) -> dict[str, str]:
        return {"xi-api-key": self.api_key()}

    def pricing(self) -> dict[str, Any] | None:
        """USD per character from ``ELEVENLABS_PRICE_PER_1K_CHARACTERS`` (plans differ; unset: unpriced)."""
        per_1k = self.config.get("price_per_1k_characters")
        if per_1k in (None, ""):
            return None
        try:
            return {"per_character": float(per_1k) / 1000.0, "currency": "USD"}
        except (TypeError, ValueError):
            raise ConfigurationError(f"ELEVENLABS_PRICE_PER_1K_CHARACTERS must be a number, got {per_1k!r}") from None

    def fetch_models(self) -> list[ProviderModel]:
        self.ensure_configured()
        body = self.http.get_json("/v1/voices")
        voices = body.get("voices") if isinstance(body, dict) else None
        if not isinstance(voices, list):
            raise ProviderResponseError(f"{self.label}: GET /v1/voices response has no 'voices' list")
        return [
            ProviderModel(
                id=v["voice_id"],
                name=v.get("name") or v["voice_id"],
                description=v.get("description"),
                capabilities=[MediaCapability.TEXT_TO_AUDIO],
                parameters={k: v[k] for k in ("category", "labels", "preview_url") if v.get(k) is not None},
                pricing=self.pricing(),
            )
            for v in voices
            if isinstance(v, dict) and isinstance(v.get("voice_id"), str)
        ]

    def get_model_info(self, model_id: str) -> ProviderModel:
        """A voice id, or a voice name (case-insensitive) for readability."""
        models = self.models
        for m in models:
            if m.id == model_id:
                return m
        for m in models:
            if m.name.lower() == model_id.lower():
                return m
        return super().get_model_info(model_id)
