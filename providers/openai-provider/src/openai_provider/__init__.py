"""OpenAI: chat models over the Chat Completions API; /models lists every kind, only chat ones are kept."""

from __future__ import annotations

from typing import Any

from mediaconduit_worker import MediaCapability, OpenAICompatProvider, ProviderModel

CHAT_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")
# Published USD prices per million input/output tokens, by model family (longest prefix first); /models has none.
PRICING = [
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1", 2.00, 8.00),
    ("o4-mini", 1.10, 4.40),
    ("o3-mini", 1.10, 4.40),
    ("o3", 2.00, 8.00),
]


def pricing_for(model_id: str) -> dict[str, Any] | None:
    for prefix, prompt, completion in PRICING:
        if model_id.startswith(prefix):
            return {"prompt": prompt / 1e6, "completion": completion / 1e6, "currency": "USD"}
    return None
NOT_CHAT = ("audio", "realtime", "transcribe", "tts", "image", "embedding", "search", "instruct")


def is_chat_model(model_id: str) -> bool:
    """/models has no type field: chat models are told apart by their documented id families."""
    return model_id.startswith(CHAT_PREFIXES) and not any(word in model_id for word in NOT_CHAT)


class OpenAIProvider(OpenAICompatProvider):
    config_env = {
        "api_key": "OPENAI_API_KEY",
        "base_url": "OPENAI_BASE_URL",
        "timeout": "OPENAI_TIMEOUT",
        "organization": "OPENAI_ORG_ID",
        "project": "OPENAI_PROJECT_ID",
    }
    default_base_url = "https://api.openai.com/v1"

    def extra_headers(self) -> dict[str, str]:
        headers = {}
        if self.config.get("organization"):
            headers["OpenAI-Organization"] = str(self.config["organization"])
        if self.config.get("project"):
            headers["OpenAI-Project"] = str(self.config["project"])
        return headers

    def model_from_api(self, entry: dict[str, Any]) -> ProviderModel | None:
        if not is_chat_model(entry["id"]):
            return None
        return ProviderModel(
            id=entry["id"],
            name=entry["id"],
            capabilities=[MediaCapability.TEXT_TO_TEXT],
            parameters={"owned_by": entry.get("owned_by"), "created": entry.get("created")},
            pricing=pricing_for(entry["id"]),
        )

    def discover_models(self) -> list[ProviderModel]:
        """The manifest's models get their published pricing too (when the listing fails, they are all there is)."""
        models = super().discover_models()
        for m in models:
            m.pricing = m.pricing or pricing_for(m.id)
        return models
