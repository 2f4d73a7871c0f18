"""Image to text through the tesseract-service container.

Only an image's own bytes go to Tesseract, which takes anything else as a list of file names to read
(inside its container); the worker's pixel cap goes along as ``max_pixels``.
"""

from __future__ import annotations

import time
from typing import Any

from mediaconduit_worker import (
    DockerProvider,
    Image,
    ImageToTextModel,
    InvalidInputError,
    MediaCapability,
    ProviderHTTPError,
    Text,
    cap_error,
    image_format,
    input_asset,
    media_caps,
)


class TesseractModel(ImageToTextModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = dict(options or {})
        image = input_asset(input, Image)
        data = image.data
        if image_format(data[:16]) is None:
            raise InvalidInputError(f"input: tesseract reads images only (PNG, JPEG, GIF, TIFF, BMP, WebP); these "
                                    f"{len(data):,} bytes ({image.mime_type}) are not one")
        params = {"lang": str(opts.get("language", "eng")), "psm": str(opts.get("psm", 3)),
                  "max_pixels": media_caps()["max_pixels"]}
        assert isinstance(self.provider, TesseractDockerProvider)
        try:
            reply = self.provider.client().request_json("POST", "/ocr", params=params, content=data,
                                                        headers={"Content-Type": image.mime_type})
        except ProviderHTTPError as exc:
            raise cap_error(exc, "tesseract /ocr") or exc from None
        prompt = self.generation_prompt(input, opts, started, service=self.provider.service_metadata())
        return Text.from_string(str(reply.get("text", "")).strip(), language=params["lang"],
                                metadata={"generation_prompt": prompt})


class TesseractDockerProvider(DockerProvider):
    model_classes = {MediaCapability.IMAGE_TO_TEXT: TesseractModel}
    service_timeout = 300
