"""Image to text through the tesseract-service container."""

from __future__ import annotations

import time
from typing import Any

import httpx

from mediaconduit_worker import (
    DockerProvider, Image, ImageToTextModel, MediaCapability, ProviderExecutionError, Text, TransientError, input_asset,
)
from mediaconduit_worker.services import ServiceInfo


class TesseractModel(ImageToTextModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = dict(options or {})
        image = input_asset(input, Image)
        params = {"lang": str(opts.get("language", "eng")), "psm": str(opts.get("psm", 3))}
        assert isinstance(self.provider, TesseractDockerProvider)
        reply = self.provider.post("/ocr", params=params, content=image.data, headers={"Content-Type": image.mime_type})
        prompt = self.generation_prompt(input, opts, started, service=self.provider.service_metadata())
        return Text.from_string(str(reply.get("text", "")).strip(), language=params["lang"],
                                metadata={"generation_prompt": prompt})


class TesseractDockerProvider(DockerProvider):
    model_classes = {MediaCapability.IMAGE_TO_TEXT: TesseractModel}
    _http: httpx.Client | None = None

    def on_service_ready(self, service_info: ServiceInfo) -> None:
        self._http = httpx.Client(base_url=service_info.base_url, timeout=300, trust_env=False)

    def post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """POST and decode JSON: unreachable is worth a retry (the next attempt restarts it), 4xx is not."""
        self.ensure_service()
        assert self._http is not None
        try:
            response = self._http.post(path, **kwargs)
        except httpx.TransportError as exc:
            raise TransientError(f"{self.id}: tesseract service unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            raise TransientError(f"{self.id}: POST {path} failed with HTTP {response.status_code}: {response.text[:300]}")
        if response.status_code >= 400:
            raise ProviderExecutionError(f"{self.id}: POST {path} rejected (HTTP {response.status_code}): {response.text[:300]}")
        return response.json()
