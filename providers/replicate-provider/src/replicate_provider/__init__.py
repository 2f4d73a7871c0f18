"""Replicate over its predictions API (https://replicate.com/docs/reference/http).

Create ``POST /v1/models/{owner}/{name}/predictions`` (or ``POST /v1/predictions`` with a version),
asking the API to hold the request (``Prefer: wait=N``) so quick models answer in one round trip;
then poll ``GET /v1/predictions/{id}`` until succeeded, failed or canceled, with an interval that
never sleeps past the job's deadline. On the deadline or an interruption the prediction is cancelled
(``POST /v1/predictions/{id}/cancel``): it is billed by the second. Output files are streamed into the
blob store; their media type picks the asset (image, audio or video).
"""

from __future__ import annotations

import time
from typing import Any

from mediaconduit_worker import (
    Audio,
    BinaryAsset,
    Image,
    InvalidInputError,
    MediaCapability,
    Model,
    ProviderExecutionError,
    ProviderModel,
    ProviderResponseError,
    RemoteProvider,
    Video,
    download,
    guess_mime,
    input_text,
    poll_until,
    time_left,
)

TERMINAL = ("succeeded", "failed", "canceled")
KINDS: dict[str, type[BinaryAsset]] = {"image": Image, "audio": Audio, "video": Video}
CAPABILITY_KIND = {MediaCapability.TEXT_TO_IMAGE: Image, MediaCapability.TEXT_TO_AUDIO: Audio,
                   MediaCapability.TEXT_TO_VIDEO: Video}


class ReplicateModel(Model):
    """One model (``owner/name`` or ``owner/name:version``); the text becomes ``input.prompt``."""

    provider: ReplicateProvider

    def transform(self, input: Any, options: dict[str, Any] | None = None) -> BinaryAsset:
        started = time.perf_counter()
        self.provider.ensure_configured()
        opts = dict(options or {})
        prompt = input_text(input)
        if not prompt.strip():
            raise InvalidInputError(f"Replicate model {self.id!r} needs a non-empty prompt")
        prediction = self.provider.create(self.id, {"prompt": prompt, **opts})
        prediction = self.provider.wait(prediction, what=f"replicate: prediction of {self.id}")
        output = first_file(prediction.get("output"))
        if output is None:
            raise ProviderResponseError(f"replicate: prediction {prediction.get('id')} of {self.id} succeeded "
                                        f"without a file output: {str(prediction.get('output'))[:200]!r}")
        predict_time = (prediction.get("metrics") or {}).get("predict_time")
        metadata: dict[str, Any] = {"prediction_id": prediction.get("id"), "replicate_model": prediction.get("model"),
                                    "version": prediction.get("version"), "output_url": output}
        if predict_time is not None:
            metadata["metrics"] = {"predict_time": predict_time}
            cost = self.provider.cost(self.id, float(predict_time))
            if cost is not None:
                metadata["cost"] = cost
        kind = self.kind_of(output)
        asset = download(self.provider.http, output, kind, what=f"replicate: output of prediction {prediction.get('id')}",
                         timeout=max(time_left(default=self.provider.default_timeout) or 0.0, 5.0), metadata=metadata)
        asset.metadata["generation_prompt"] = self.generation_prompt(input, opts, started, prediction_id=prediction.get("id"))
        return asset

    def kind_of(self, url: str) -> type[BinaryAsset]:
        """The asset type the output file's name suggests, else the model's capability."""
        major = guess_mime(url, "").split("/")[0]
        return KINDS.get(major) or CAPABILITY_KIND.get(self.capability or MediaCapability.TEXT_TO_IMAGE, Image)


def first_file(output: Any) -> str | None:
    """Replicate outputs are a URL, a list of them, or an object holding them; the first URL."""
    if isinstance(output, str):
        return output if output.startswith(("http://", "https://")) else None
    if isinstance(output, list):
        return next((u for u in (first_file(o) for o in output) if u), None)
    if isinstance(output, dict):
        return next((u for u in (first_file(o) for o in output.values()) if u), None)
    return None


class ImageModel(ReplicateModel):
    capability = MediaCapability.TEXT_TO_IMAGE


class AudioModel(ReplicateModel):
    capability = MediaCapability.TEXT_TO_AUDIO


class VideoModel(ReplicateModel):
    capability = MediaCapability.TEXT_TO_VIDEO


class ReplicateProvider(RemoteProvider):
    config_env = {"api_key": "REPLICATE_API_TOKEN", "base_url": "REPLICATE_BASE_URL", "timeout": "REPLICATE_TIMEOUT",
                  "prefer_wait": "REPLICATE_PREFER_WAIT"}
    default_base_url = "https://api.replicate.com"
    default_timeout = 1800.0
    model_classes = {MediaCapability.TEXT_TO_IMAGE: ImageModel, MediaCapability.TEXT_TO_AUDIO: AudioModel,
                     MediaCapability.TEXT_TO_VIDEO: VideoModel}

    # -- models -------------------------------------------------------------------------------
    def discover_models(self) -> list[ProviderModel]:
        """The manifest's models with their ``pricing`` (per second of predict time)."""
        models = super().discover_models()
        prices = {m.id: (m.model_extra or {}).get("pricing") for m in (self.manifest.models if self.manifest else [])}
        for m in models:
            m.pricing = prices.get(m.id) or m.pricing
        return models

    def get_model_info(self, model_id: str) -> ProviderModel:
        """Listed models, else any public ``owner/name[:version]`` looked up on Replicate."""
        for m in self.models:
            if m.id == model_id:
                return m
        info = self.lookup(model_id)
        self.models.append(info)
        return info

    def lookup(self, model_id: str) -> ProviderModel:
        owner_name = model_id.split(":", 1)[0]
        if owner_name.count("/") != 1:
            raise InvalidInputError(f"Replicate model ids are owner/name or owner/name:version, not {model_id!r}")
        self.ensure_configured()
        body = self.http.get_json(f"/v1/models/{owner_name}")
        if not isinstance(body, dict):
            raise ProviderResponseError(f"replicate: GET /v1/models/{owner_name} returned no model object")
        text = f"{body.get('description') or ''} {owner_name}".lower()
        cap = (MediaCapability.TEXT_TO_VIDEO if "video" in text else
               MediaCapability.TEXT_TO_AUDIO if any(w in text for w in ("audio", "music", "speech", "voice")) else
               MediaCapability.TEXT_TO_IMAGE)
        return ProviderModel(id=model_id, name=str(body.get("name") or owner_name), description=body.get("description"),
                             capabilities=[cap], parameters={"run_count": body.get("run_count")})

    def cost(self, model_id: str, predict_time: float) -> dict[str, Any] | None:
        price = ((self.get_model_info(model_id).pricing or {}).get("per_second"))
        if price is None:
            return None
        return {"total": round(predict_time * float(price), 8), "currency": "USD", "source": "pricing",
                "predict_time": predict_time}

    # -- predictions ----------------------------------------------------------------------------
    def create(self, model_id: str, model_input: dict[str, Any]) -> dict[str, Any]:
        """A new prediction; the API holds the request up to ``Prefer: wait`` seconds for quick models."""
        wait = int(min(float(self.config.get("prefer_wait") or 10), 60, (time_left(default=60) or 0) - 2))
        headers = {"Prefer": f"wait={wait}"} if wait >= 1 else {}
        if ":" in model_id:
            path, body = "/v1/predictions", {"version": model_id.split(":", 1)[1], "input": model_input}
        else:
            path, body = f"/v1/models/{model_id}/predictions", {"input": model_input}
        prediction = self.http.post_json(path, body, headers=headers, timeout=max(wait, 0) + 30)
        if not isinstance(prediction, dict) or not prediction.get("id"):
            raise ProviderResponseError(f"replicate: POST {path} returned no prediction id: {str(prediction)[:200]!r}")
        return prediction

    def wait(self, prediction: dict[str, Any], *, what: str) -> dict[str, Any]:
        """Poll until terminal (cancelling on the deadline); a succeeded prediction or a clear error."""
        pid = str(prediction["id"])
        get_url = (prediction.get("urls") or {}).get("get") or f"/v1/predictions/{pid}"
        cancel_url = (prediction.get("urls") or {}).get("cancel") or f"/v1/predictions/{pid}/cancel"
        state = {"last": prediction}

        def check() -> dict[str, Any] | None:
            if state["last"].get("status") not in TERMINAL:
                state["last"] = self.http.get_json(get_url)
            return state["last"] if state["last"].get("status") in TERMINAL else None

        def cancel() -> None:
            self.http.request("POST", cancel_url, timeout=10)

        done = poll_until(check, cancel, what=f"{what} ({pid})", budget=self.default_timeout)
        if done["status"] == "failed":
            raise ProviderExecutionError(f"{what} ({pid}) failed: {done.get('error') or 'no error given'}"
                                         + _logs_tail(done.get("logs")))
        if done["status"] == "canceled":
            raise ProviderExecutionError(f"{what} ({pid}) was canceled on Replicate")
        return done


def _logs_tail(logs: Any) -> str:
    lines = [line for line in str(logs or "").splitlines() if line.strip()]
    return f" (last log line: {lines[-1][:200]})" if lines else ""
