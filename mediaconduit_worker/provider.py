"""Provider base classes: what a provider repository's ``main`` module subclasses."""

from __future__ import annotations

import builtins
import os
import threading
from enum import Enum
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, Field, field_validator

from .capabilities import MediaCapability, capability
from .errors import ConfigurationError, UnknownModelError
from .http import HttpClient
from .manifest import ProviderManifest
from .models import Model
from .sources import Checkout


class ProviderType(str, Enum):
    LOCAL = "local"
    REMOTE = "remote"


class ProviderModel(BaseModel):
    """A model a provider offers: metadata only; ``MediaProvider.get_model`` builds the runnable one."""

    id: str
    name: str
    description: str | None = None
    capabilities: list[MediaCapability] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    pricing: dict[str, Any] | None = None

    def __init__(self, id: str | None = None, name: str | None = None, description: str | None = None, **data: Any) -> None:
        if id is not None:
            data["id"] = id
        data.setdefault("name", name or data.get("id"))
        if description is not None:
            data["description"] = description
        super().__init__(**data)

    @field_validator("capabilities", mode="before")
    @classmethod
    def _caps(cls, value: Any) -> Any:
        return [capability(v) for v in value] if isinstance(value, list) else value


class ServiceInfo(BaseModel):
    """Where a ready service listens. ``ports[0]``/``base_url`` are real, read once it is running."""

    service_id: str
    url: str
    key: str
    """Identifies the service URL: the label every process finds the container by."""
    container_id: str
    container_name: str
    ports: list[int]
    """Host ports on 127.0.0.1, in the order of the service's container ports."""
    container_ports: list[int]
    base_url: str
    commit: str
    """The service repository's commit (or a content hash for a plain folder)."""
    image: str
    health_url: str | None = None


class ServiceHost(Protocol):
    """What the runtime hands a provider to get its Docker service: started or attached, healthy."""

    def ensure(self, url: str, origin: str | None = None) -> ServiceInfo: ...


class MediaProvider:
    """A source of models. Class attributes left empty are filled from the manifest.

    Subclasses map capabilities to model classes in ``model_classes`` (or override
    ``create_model``), and name the environment variables their settings come from in
    ``config_env`` (e.g. ``{"api_key": "OPENROUTER_API_KEY"}``).
    """

    id: ClassVar[str] = ""
    name: ClassVar[str] = ""
    type: ClassVar[ProviderType] = ProviderType.LOCAL
    capabilities: ClassVar[list[MediaCapability]] = []
    model_classes: ClassVar[dict[MediaCapability, builtins.type[Model]]] = {}
    config_env: ClassVar[dict[str, str]] = {}

    service_host: ServiceHost | None = None
    """Set by the worker that loads the provider; SDK code never imports the Docker runtime."""
    source: Checkout | None = None
    """Where the worker loaded the provider from: a relative service URL resolves against it."""

    def __init__(self) -> None:
        self._mc_sync = threading.RLock()
        self.config: dict[str, Any] = {}
        self._models: list[ProviderModel] | None = None
        self._instances: dict[str, Model] = {}
        self.manifest: ProviderManifest | None = None
        self.configure({})

    # -- set-up -------------------------------------------------------------
    def attach_manifest(self, manifest: ProviderManifest) -> None:
        """Called by the registry: fills what the class leaves empty from ``MediaConduit.provider.yml``."""
        self.manifest = manifest
        if not type(self).id:
            self.id = manifest.id  # type: ignore[misc]
        if not type(self).name:
            self.name = manifest.name  # type: ignore[misc]
        if not type(self).capabilities:
            self.capabilities = list(manifest.capabilities)  # type: ignore[misc]
        if "type" not in type(self).__dict__:
            self.type = ProviderType(manifest.type)  # type: ignore[misc]

    def configure(self, config: dict[str, Any]) -> None:
        """Settings such as API keys: explicit values win, then the ``config_env`` variables."""
        for key, env in self.config_env.items():
            if key not in self.config and os.environ.get(env):
                self.config[key] = os.environ[env]
        self.config.update({k: v for k, v in config.items() if v is not None})

    def start_service(self, url: str) -> ServiceInfo:
        """The running, healthy service of repository ``url``, through the runtime's service host; a relative
        ``url`` (``../../services/x``) is a folder of the provider's own repository, at the same commit."""
        if self.service_host is None:
            raise ConfigurationError(f"provider {self.id!r} needs the Docker service {url!r}, but it was not "
                                     "loaded by a worker that runs services")
        return self.service_host.ensure(self.source.resolve(url) if self.source else url, origin=self.id)

    # -- models -------------------------------------------------------------
    def _mc_lock(self) -> threading.RLock:
        """This provider's lock (a subclass whose ``__init__`` skips ours still gets one): jobs of a thread
        pool share the instance, and discovery or a client must be built once, not once per thread."""
        lock = self.__dict__.get("_mc_sync")
        return lock if lock is not None else self.__dict__.setdefault("_mc_sync", threading.RLock())

    @property
    def models(self) -> list[ProviderModel]:
        models = self._models
        if models is None:
            with self._mc_lock():
                if self._models is None:
                    self._models = self.discover_models()
                models = self._models
        return models

    def discover_models(self) -> list[ProviderModel]:
        """The model list; by default the manifest's. Providers with dynamic lists override this."""
        if self.manifest is None:
            return []
        return [
            ProviderModel(
                id=m.id,
                name=m.name or m.id,
                description=m.description,
                capabilities=m.capabilities or list(self.capabilities),
                parameters=m.parameters,
            )
            for m in self.manifest.models
        ]

    def pricing_of(self, model_id: str) -> dict[str, Any] | None:
        """The pricing of a model already listed (None if unknown); never triggers discovery, so the
        worker can price every call without an extra request."""
        for m in self._models or []:
            if m.id == model_id:
                return m.pricing
        return None

    def get_models_for_capability(self, cap: MediaCapability | str) -> list[ProviderModel]:
        wanted = capability(cap)
        return [m for m in self.models if wanted in m.capabilities]

    def get_model_info(self, model_id: str) -> ProviderModel:
        for m in self.models:
            if m.id == model_id:
                return m
        known = ", ".join(m.id for m in self.models) or "none"
        raise UnknownModelError(f"provider {self.id!r} has no model {model_id!r} (available: {known})")

    def get_model(self, model_id: str) -> Model:
        """The runnable model for ``model_id``, built once per process."""
        model = self._instances.get(model_id)
        if model is None:
            with self._mc_lock():
                model = self._instances.get(model_id)
                if model is None:
                    model = self._instances[model_id] = self.create_model(self.get_model_info(model_id))
        return model

    def create_model(self, info: ProviderModel) -> Model:
        for cap in info.capabilities or self.capabilities:
            cls = self.model_classes.get(cap)
            if cls is not None:
                return cls(info.id, info.name, info.description, provider=self, parameters=info.parameters)
        raise UnknownModelError(
            f"provider {self.id!r} has no model class for {info.id!r} "
            f"(capabilities {[str(c) for c in info.capabilities]})"
        )


class DockerProvider(MediaProvider):
    """A provider backed by a Docker service; the worker starts or attaches it before the first call."""

    service_info: ServiceInfo | None = None
    service_timeout: ClassVar[float] = 60.0
    """Seconds one call to the service may take (``client()``)."""
    _client: HttpClient | None = None

    def get_service_url(self) -> str:
        """The service repository (URL or path); by default the manifest's ``serviceUrl``."""
        if self.manifest is not None and self.manifest.service_url:
            return self.manifest.service_url
        raise NotImplementedError(f"provider {self.id!r} names no service: override get_service_url()")

    def on_service_ready(self, service_info: ServiceInfo) -> None:
        """Hook: called once the service answers its health check, with the real host port."""

    def ensure_service(self) -> ServiceInfo:
        """Start or attach the service (healthy) and return where it listens; cheap when already up."""
        info = self.start_service(self.get_service_url())
        if self._changed(info):
            with self._mc_lock():
                if self._changed(info):
                    self.service_info = info
                    self.on_service_ready(info)
        return info

    def _changed(self, info: ServiceInfo) -> bool:
        known = self.service_info
        return known is None or info.container_id != known.container_id or info.base_url != known.base_url

    @property
    def base_url(self) -> str:
        return self.ensure_service().base_url

    def client(self) -> HttpClient:
        """The SDK's HTTP client for the ready service, so every Docker provider fails alike: unreachable,
        429 and 5xx are retried (then handed back to the queue), 4xx is a clear permanent error."""
        info = self.ensure_service()
        client = self._client
        if client is None or client.base_url != info.base_url.rstrip("/"):
            with self._mc_lock():
                client = self._client
                if client is None or client.base_url != info.base_url.rstrip("/"):
                    client = self._client = HttpClient(self.id, info.base_url, timeout=self.service_timeout)
        return client

    def service_metadata(self) -> dict[str, Any]:
        """Which service build answered (for generation prompts): URL, id, source commit, image."""
        info = self.service_info
        return {"url": info.url, "id": info.service_id, "commit": info.commit, "image": info.image} if info else {}
