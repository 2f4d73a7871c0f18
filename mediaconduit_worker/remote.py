"""``RemoteProvider``: the base for providers that call an HTTP API with a key.

It owns what every such provider repeats: the key and base URL from ``config_env`` or
``configure()``, a clear error naming the variable when the key is missing, one shared
``HttpClient`` per configuration, and model discovery that degrades gracefully (a failed
listing is retried on the next job instead of leaving the worker with no models).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from .capabilities import MediaCapability
from .errors import ConfigurationError, MediaConduitError, UnknownModelError
from .http import HttpClient
from .models import Model
from .provider import MediaProvider, ProviderModel, ProviderType

log = logging.getLogger(__name__)


class RemoteProvider(MediaProvider):
    """Subclasses set ``config_env`` (``api_key``, ``base_url``, optionally ``timeout``) and ``default_base_url``."""

    type: ClassVar[ProviderType] = ProviderType.REMOTE
    default_base_url: ClassVar[str] = ""
    requires_api_key: ClassVar[bool] = True
    accepts_unlisted_models: ClassVar[bool] = True
    """APIs validate model ids themselves; when discovery failed an unlisted id is tried rather than refused."""
    default_timeout: ClassVar[float] = 120.0

    def __init__(self) -> None:
        self._http: HttpClient | None = None
        self._discovery_error: MediaConduitError | None = None
        super().__init__()

    @property
    def label(self) -> str:
        return self.id or type(self).__name__

    def configure(self, config: dict[str, Any]) -> None:
        """New settings take effect on the next request (the HTTP client is rebuilt)."""
        super().configure(config)
        if self._http is not None:
            self._http.close()
        self._http = None

    # -- settings -----------------------------------------------------------------------------
    def api_key(self) -> str:
        key = self.config.get("api_key")
        if not key:
            env = self.config_env.get("api_key", "the provider's API key variable")
            raise ConfigurationError(
                f"provider {self.label!r} has no API key: set {env} in the worker's environment "
                f"or call configure({{'api_key': ...}})"
            )
        return str(key)

    @property
    def base_url(self) -> str:
        url = str(self.config.get("base_url") or self.default_base_url).rstrip("/")
        if not url:
            env = self.config_env.get("base_url", "base_url")
            raise ConfigurationError(f"provider {self.label!r} has no base URL: set {env}")
        return url

    def ensure_configured(self) -> None:
        """Called by models before a request: a missing key fails here, clearly, not as an HTTP 401."""
        if self.requires_api_key:
            self.api_key()

    def auth_headers(self) -> dict[str, str]:
        """How this API takes its key; Bearer by default."""
        return {"Authorization": f"Bearer {self.api_key()}"}

    def extra_headers(self) -> dict[str, str]:
        """Non-secret headers every request carries (API versions, attribution)."""
        return {}

    @property
    def http(self) -> HttpClient:
        client = self._http
        if client is not None:
            return client
        with self._mc_lock():
            return self._build_http()

    def _build_http(self) -> HttpClient:
        if self._http is None:
            # No key, no auth headers: public endpoints (e.g. a model list) still work.
            auth = self.auth_headers() if self.config.get("api_key") else {}
            env = self.config_env.get("api_key")
            self._http = HttpClient(
                self.label,
                self.base_url,
                auth_headers=auth,
                headers=self.extra_headers(),
                secrets=[str(self.config.get("api_key") or "")],
                timeout=float(self.config.get("timeout") or self.default_timeout),
                max_retries=int(self.config.get("max_retries", 2)),
                auth_hint=f"check {env}" if env else None,
            )
        return self._http

    # -- models -------------------------------------------------------------------------------
    def fetch_models(self) -> list[ProviderModel]:
        """The API's model list; override in providers whose API lists models."""
        return []

    def discover_models(self) -> list[ProviderModel]:
        """Manifest models, then the API's (the API's entry wins, keeping manifest capabilities it lacks)."""
        merged = {m.id: m for m in super().discover_models()}
        self._discovery_error = None
        try:
            fetched = self.fetch_models()
        except MediaConduitError as exc:
            log.warning("provider %s: model discovery failed (%s); will retry on the next job", self.label, exc)
            self._discovery_error = exc
            fetched = []
        for model in fetched:
            known = merged.get(model.id)
            if known is not None and not model.capabilities:
                model.capabilities = known.capabilities
            merged[model.id] = model
        return list(merged.values())

    @property
    def models(self) -> list[ProviderModel]:
        if self._models is not None:
            return self._models
        with self._mc_lock():
            models = super().models
            if self._discovery_error is not None:
                self._models = None  # try the API again next time
            return models

    def get_model_info(self, model_id: str) -> ProviderModel:
        """Known ids as listed; when discovery failed, an unlisted id is tried so the real error shows at call time."""
        models = self.models
        for m in models:
            if m.id == model_id:
                return m
        if self._discovery_error is not None and self.accepts_unlisted_models:
            caps = [MediaCapability(c) for c in self.capabilities][:1]
            return ProviderModel(id=model_id, name=model_id, capabilities=caps, parameters={"unlisted": True})
        known = ", ".join(m.id for m in models[:30]) or "none"
        more = f" and {len(models) - 30} more" if len(models) > 30 else ""
        raise UnknownModelError(f"provider {self.label!r} has no model {model_id!r} (available: {known}{more})")

    def get_model(self, model_id: str) -> Model:
        """As the base class, but a stand-in for an unlisted id is not cached: the next listing may know it."""
        info = self.get_model_info(model_id)
        if info.parameters.get("unlisted"):
            return self.create_model(info)
        return super().get_model(model_id)
