"""OpenAI: chat models over the Chat Completions API; /models lists every kind, only chat ones are kept."""

from __future__ import annotations

from typing import Any

from mediaconduit_worker import MediaCapability, OpenAICompatProvider, ProviderModel

CHAT_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")
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
        )
