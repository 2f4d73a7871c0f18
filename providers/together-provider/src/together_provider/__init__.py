"""Together AI: chat, image generation and speech over its OpenAI-compatible API."""

from __future__ import annotations

from typing import Any

from mediaconduit_worker import MediaCapability, OpenAICompatProvider, ProviderModel, per_token_price

# Together's /models `type` field -> the capability (queue) the model serves.
TYPE_CAPABILITY = {
    "chat": MediaCapability.TEXT_TO_TEXT,
    "language": MediaCapability.TEXT_TO_TEXT,
    "code": MediaCapability.TEXT_TO_TEXT,
    "image": MediaCapability.TEXT_TO_IMAGE,
    "audio": MediaCapability.TEXT_TO_AUDIO,
}


def _pricing(raw: Any, cap: MediaCapability) -> dict[str, Any] | None:
    """Together quotes chat models in USD per million tokens (``input``/``output``, stored per token),
    image models per image (``base``) and speech per million input characters (``input``)."""
    if not isinstance(raw, dict):
        return None
    if cap == MediaCapability.TEXT_TO_IMAGE:
        return {"per_image": per_token_price(raw.get("base")), "currency": "USD"}
    if cap == MediaCapability.TEXT_TO_AUDIO:
        return {"per_character": per_token_price(raw.get("input"), 1e6), "currency": "USD"}
    return {
        "prompt": per_token_price(raw.get("input"), 1e6),
        "completion": per_token_price(raw.get("output"), 1e6),
        "currency": "USD",
    }


class TogetherProvider(OpenAICompatProvider):
    """Discovery puts each model in its capability; embedding/rerank/moderation models are skipped."""

    config_env = {"api_key": "TOGETHER_API_KEY", "base_url": "TOGETHER_BASE_URL", "timeout": "TOGETHER_TIMEOUT"}
    default_base_url = "https://api.together.xyz/v1"
    default_voice = "helpful woman"
    default_audio_format = "mp3"

    def model_from_api(self, entry: dict[str, Any]) -> ProviderModel | None:
        cap = TYPE_CAPABILITY.get(str(entry.get("type", "")).lower())
        if cap is None:
            return None
        params = {k: entry[k] for k in ("context_length", "organization", "type") if entry.get(k) is not None}
        return ProviderModel(
            id=entry["id"],
            name=entry.get("display_name") or entry["id"],
            description=entry.get("description"),
            capabilities=[cap],
            parameters=params,
            pricing=_pricing(entry.get("pricing"), cap),
        )
