"""Image to text through the tesseract-service container."""

from __future__ import annotations

import time
from typing import Any

from mediaconduit_worker import DockerProvider, Image, ImageToTextModel, MediaCapability, Text, input_asset


class TesseractModel(ImageToTextModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = dict(options or {})
        image = input_asset(input, Image)
        params = {"lang": str(opts.get("language", "eng")), "psm": str(opts.get("psm", 3))}
        assert isinstance(self.provider, TesseractDockerProvider)
        reply = self.provider.client().request_json("POST", "/ocr", params=params, content=image.data,
                                                    headers={"Content-Type": image.mime_type})
        prompt = self.generation_prompt(input, opts, started, service=self.provider.service_metadata())
        return Text.from_string(str(reply.get("text", "")).strip(), language=params["lang"],
                                metadata={"generation_prompt": prompt})


class TesseractDockerProvider(DockerProvider):
    model_classes = {MediaCapability.IMAGE_TO_TEXT: TesseractModel}
    service_timeout = 300
