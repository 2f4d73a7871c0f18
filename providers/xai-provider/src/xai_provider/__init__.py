"""X.AI: Grok models over xAI's OpenAI-compatible API; the model list is known without an API call."""

from __future__ import annotations

from dataclasses import dataclass

from mediaconduit_worker import MediaCapability, OpenAICompatProvider, ProviderModel


@dataclass(frozen=True)
class Grok:
    """One Grok model as xAI documents it: release date, speed tier (1 = fastest), USD per million tokens."""

    id: str
    name: str
    description: str
    released: str
    speed: int
    context: int
    input_price: float
    output_price: float


GROK_MODELS = [
    Grok("grok-4", "Grok 4", "xAI's flagship reasoning model", "2025-07-09", 3, 256_000, 3.0, 15.0),
    Grok("grok-4-fast-non-reasoning", "Grok 4 Fast", "Grok 4 speed tier without reasoning", "2025-09-19", 1, 2_000_000, 0.2, 0.5),
    Grok("grok-code-fast-1", "Grok Code Fast 1", "Fast agentic coding model", "2025-08-28", 1, 256_000, 0.2, 1.5),
    Grok("grok-3", "Grok 3", "General model, strong at knowledge tasks", "2025-02-17", 2, 131_072, 3.0, 15.0),
    Grok("grok-3-mini", "Grok 3 Mini", "Small, inexpensive reasoning model", "2025-02-17", 1, 131_072, 0.3, 0.5),
    Grok("grok-2-1212", "Grok 2", "Previous generation text model", "2024-12-12", 2, 131_072, 2.0, 10.0),
]


class XAIProvider(OpenAICompatProvider):
    """Chat with Grok; ``get_fastest_model()`` and ``get_latest_model()`` pick from the known list."""

    config_env = {"api_key": "XAI_API_KEY", "base_url": "XAI_BASE_URL", "timeout": "XAI_TIMEOUT"}
    default_base_url = "https://api.x.ai/v1"
    lists_models = False

    def fetch_models(self) -> list[ProviderModel]:
        """Known models with their pricing (so results carry a cost); no request is made."""
        return [
            ProviderModel(
                id=g.id,
                name=g.name,
                description=g.description,
                capabilities=[MediaCapability.TEXT_TO_TEXT],
                parameters={"context_length": g.context, "released": g.released, "speed_tier": g.speed},
                pricing={"prompt": g.input_price / 1e6, "completion": g.output_price / 1e6, "currency": "USD"},
            )
            for g in GROK_MODELS
        ]

    def get_model_info(self, model_id: str) -> ProviderModel:
        """Listed models, plus any newer ``grok-*`` id (xAI validates it; the list here may lag)."""
        if model_id.startswith("grok-") and all(m.id != model_id for m in self.models):
            return ProviderModel(id=model_id, name=model_id, capabilities=[MediaCapability.TEXT_TO_TEXT])
        return super().get_model_info(model_id)

    def get_fastest_model(self) -> ProviderModel:
        """The fastest tier; among equals the cheapest, then the newest."""
        best = min(GROK_MODELS, key=lambda g: (g.speed, g.input_price + g.output_price, _neg_date(g.released)))
        return self.get_model_info(best.id)

    def get_latest_model(self) -> ProviderModel:
        """The most recently released model."""
        return self.get_model_info(max(GROK_MODELS, key=lambda g: g.released).id)


def _neg_date(date: str) -> int:
    return -int(date.replace("-", ""))
