"""OpenRouter: one OpenAI-compatible API in front of many vendors' models, each with its own pricing."""

from __future__ import annotations

from typing import Any

from mediaconduit_worker import (
    ChatOptions,
    MediaCapability,
    Model,
    OpenAICompatProvider,
    ProviderModel,
    per_token_price,
)


def _pricing(raw: Any) -> dict[str, Any] | None:
    """OpenRouter quotes USD per token as strings (``"0.000003"``); keep them as floats."""
    if not isinstance(raw, dict):
        return None
    pricing: dict[str, Any] = {k: per_token_price(v) for k, v in raw.items()}
    pricing["currency"] = "USD"
    return pricing


def _outputs_text(entry: dict[str, Any]) -> bool:
    arch = entry.get("architecture") or {}
    outputs = arch.get("output_modalities")
    if isinstance(outputs, list):
        return "text" in outputs
    modality = arch.get("modality")
    return not isinstance(modality, str) or "text" in modality.split("->")[-1]


class OpenRouterProvider(OpenAICompatProvider):
    """Models come from ``GET /models`` (public, no key needed); chat needs ``OPENROUTER_API_KEY``."""

    config_env = {
        "api_key": "OPENROUTER_API_KEY",
        "base_url": "OPENROUTER_BASE_URL",
        "timeout": "OPENROUTER_TIMEOUT",
        "site_url": "OPENROUTER_SITE_URL",
        "app_name": "OPENROUTER_APP_NAME",
    }
    default_base_url = "https://openrouter.ai/api/v1"
    listing_needs_key = False

    def extra_headers(self) -> dict[str, str]:
        """OpenRouter's optional app attribution headers."""
        headers = {}
        if self.config.get("site_url"):
            headers["HTTP-Referer"] = str(self.config["site_url"])
        if self.config.get("app_name"):
            headers["X-Title"] = str(self.config["app_name"])
        return headers

    def model_from_api(self, entry: dict[str, Any]) -> ProviderModel | None:
        if not _outputs_text(entry):
            return None
        params = {k: entry[k] for k in ("context_length", "supported_parameters") if entry.get(k) is not None}
        return ProviderModel(
            id=entry["id"],
            name=entry.get("name") or entry["id"],
            description=entry.get("description"),
            capabilities=[MediaCapability.TEXT_TO_TEXT],
            parameters=params,
            pricing=_pricing(entry.get("pricing")),
        )

    def get_free_models(self) -> list[ProviderModel]:
        """Models whose prompt and completion prices are both zero."""
        return [
            m for m in self.models
            if m.pricing is not None and m.pricing.get("prompt") == 0 and m.pricing.get("completion") == 0
        ]

    def chat_body(self, model: Model, text: str, opts: ChatOptions) -> dict[str, Any]:
        """Ask OpenRouter to report the request's cost along with the token counts."""
        return {**super().chat_body(model, text, opts), "usage": {"include": True}}
