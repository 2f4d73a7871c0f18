"""fal.ai over its queue API (https://docs.fal.ai/model-endpoints/queue).

Submit ``POST {queue}/{model id}`` (``Authorization: Key <FAL_KEY>``), then follow the URLs the
answer names: poll ``status_url`` until ``COMPLETED`` (interval bounded by the job's deadline), fetch
``response_url``; on the deadline or an interruption ``PUT cancel_url``. Image inputs go as a data
URI in ``image_url``. The first output file (``images[0]``, ``image``, ``video``, ``audio``...) is
streamed into the blob store.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from mediaconduit_worker import (
    Audio,
    BinaryAsset,
    Image,
    ImageToImageModel,
    InvalidInputError,
    MediaCapability,
    ProviderExecutionError,
    ProviderModel,
    ProviderResponseError,
    RemoteProvider,
    Text,
    TextToImageModel,
    Video,
    download,
    input_text,
    poll_until,
    time_left,
)

KINDS: dict[str, type[BinaryAsset]] = {"image": Image, "audio": Audio, "video": Video}
FILE_KEYS = ("images", "image", "video", "audio", "audio_file", "audio_url")
INLINE_IMAGE_LIMIT = 20 << 20
"""Data URIs above this are refused with a clear error rather than sent (fal limits request bodies)."""


def run_fal(model: TextToImageModel | ImageToImageModel, input: Any, options: dict[str, Any] | None) -> BinaryAsset:
    """The shared body of both model kinds: build the input, run the request, download the output."""
    started = time.perf_counter()
    provider = model.provider
    assert isinstance(provider, FalProvider)
    provider.ensure_configured()
    opts = dict(options or {})
    items = input if isinstance(input, list) else [input]
    images = [i for i in items if isinstance(i, Image)]
    texts = [i for i in items if isinstance(i, str | Text)]
    body: dict[str, Any] = {}
    if texts:
        body["prompt"] = input_text(texts)
    if images:
        body["image_url"] = data_uri(images[0])
    if not body:
        raise InvalidInputError(f"fal model {model.id!r} needs a prompt or an image")
    body.update(opts)
    result, request_id, metrics = provider.run(model.id, body)
    url, mime = first_file(result)
    if url is None:
        raise ProviderResponseError(f"fal: request {request_id} of {model.id} completed without a file output "
                                    f"(keys: {sorted(result)[:10]})")
    kind = KINDS.get((mime or "").split("/")[0], Image)
    metadata = {"request_id": request_id, "output_url": url, "seed": result.get("seed"), "metrics": metrics}
    asset = download(provider.http, url, kind, what=f"fal: output of request {request_id}",
                     timeout=max(time_left(default=provider.default_timeout) or 0.0, 5.0),
                     metadata={k: v for k, v in metadata.items() if v is not None})
    asset.metadata["generation_prompt"] = model.generation_prompt(input, opts, started, request_id=request_id)
    return asset


def data_uri(image: Image) -> str:
    if (image.size or 0) > INLINE_IMAGE_LIMIT:
        raise InvalidInputError(f"fal: the input image is {image.size} bytes; at most {INLINE_IMAGE_LIMIT} go inline")
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode()}"


def first_file(result: dict[str, Any]) -> tuple[str | None, str | None]:
    """The first ``{"url": ..., "content_type": ...}`` in the places fal's models put files."""
    for key in FILE_KEYS:
        value = result.get(key)
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, dict) and isinstance(value.get("url"), str):
            default = "image/png" if key.startswith("image") else f"{key.split('_')[0]}/*"
            return value["url"], str(value.get("content_type") or default)
    return None, None


class FalTextToImage(TextToImageModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> BinaryAsset:
        return run_fal(self, input, options)


class FalImageToImage(ImageToImageModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> BinaryAsset:
        return run_fal(self, input, options)


class FalProvider(RemoteProvider):
    config_env = {"api_key": "FAL_KEY", "base_url": "FAL_QUEUE_URL", "timeout": "FAL_TIMEOUT"}
    default_base_url = "https://queue.fal.run"
    default_timeout = 1800.0
    model_classes = {MediaCapability.TEXT_TO_IMAGE: FalTextToImage, MediaCapability.IMAGE_TO_IMAGE: FalImageToImage}

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.api_key()}"}

    def get_model_info(self, model_id: str) -> ProviderModel:
        """Listed models, else any ``owner/app[/path]`` id (fal has no model lookup; it answers 404 itself)."""
        for m in self.models:
            if m.id == model_id:
                return m
        if model_id.count("/") < 1 or model_id.startswith("/"):
            raise InvalidInputError(f"fal model ids look like fal-ai/flux/dev, not {model_id!r}")
        cap = MediaCapability.IMAGE_TO_IMAGE if "image-to-image" in model_id else MediaCapability.TEXT_TO_IMAGE
        return ProviderModel(id=model_id, name=model_id, capabilities=[cap])

    def run(self, model_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """Submit, wait (cancelling on the deadline), fetch: (result, request id, metrics)."""
        submitted = self.http.post_json(f"/{model_id}", body)
        if not isinstance(submitted, dict) or not submitted.get("request_id"):
            raise ProviderResponseError(f"fal: POST /{model_id} returned no request_id: {str(submitted)[:200]!r}")
        rid = str(submitted["request_id"])
        base = f"/{'/'.join(model_id.split('/')[:2])}/requests/{rid}"
        status_url = submitted.get("status_url") or f"{base}/status"
        what = f"fal: request {rid} of {model_id}"

        def check() -> dict[str, Any] | None:
            status = self.http.get_json(status_url, params={"logs": "1"})
            if not isinstance(status, dict):
                raise ProviderResponseError(f"{what}: status answer is not an object: {str(status)[:200]!r}")
            if status.get("error"):
                raise ProviderExecutionError(f"{what} failed: {status['error']}")
            return status if status.get("status") == "COMPLETED" else None

        def cancel() -> None:
            self.http.request("PUT", submitted.get("cancel_url") or f"{base}/cancel", timeout=10)

        status = poll_until(check, cancel, what=what, budget=self.default_timeout)
        result = self.http.get_json(status.get("response_url") or submitted.get("response_url") or base)
        if not isinstance(result, dict):
            raise ProviderResponseError(f"{what}: the response is not an object: {str(result)[:200]!r}")
        return result, rid, status.get("metrics") or {}
