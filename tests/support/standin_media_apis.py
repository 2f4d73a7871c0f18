"""Stand-ins for Replicate's predictions API and fal.ai's queue API, speaking their documented wire
formats: prediction objects with ``urls.get``/``urls.cancel`` and ``metrics.predict_time``,
``Prefer: wait``, problem-JSON errors with ``detail``; fal's ``request_id``/``status_url``/
``response_url``/``cancel_url``, 202 while queued, ``PUT`` cancel. Output files are served from a
separate path (``/delivery``), as from a CDN host: they must be fetched without the API key.

What a model does is chosen by its name: ``*/fast-*`` finish at once, ``*/slow-*`` after a second or
two, ``*/fails`` fail with an error, and ``*/never`` run until cancelled.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from support.standin_apis import PNG, Recorded, Reply, StandInAPIs, _Handler, tiny_wav

REPLICATE_TOKEN = "r8_standin0123456789abcdefghijklmn"
FAL_KEY = "fal-standin-key-id:0123456789abcdef0123"
FAILURE = "CUDA out of memory. Tried to allocate 20.00 GiB"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64


@dataclass
class Job:
    """One prediction (Replicate) or queue request (fal)."""

    id: str
    model: str
    input: Any
    created: float = field(default_factory=time.monotonic)
    canceled: bool = False

    @property
    def behaviour(self) -> str:
        return self.model.split("/")[-1]

    def status(self) -> str:
        if self.canceled:
            return "canceled"
        if self.behaviour == "never":
            return "processing"
        took = 1.5 if self.behaviour.startswith("slow") else 0.0
        if time.monotonic() - self.created < took:
            return "processing"
        return "failed" if self.behaviour == "fails" else "succeeded"


class MediaAPIs(StandInAPIs):
    """The shared stand-in server plus the Replicate (``/replicate``) and fal (``/fal``) routes."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, Job] = {}
        self.server.RequestHandlerClass = type("Handler", (_MediaHandler,), {"apis": self})

    def env(self) -> dict[str, str]:
        return {"REPLICATE_BASE_URL": f"{self.url}/replicate", "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
                "FAL_QUEUE_URL": f"{self.url}/fal", "FAL_KEY": FAL_KEY}

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.jobs.clear()

    def job(self, model: str, input: Any) -> Job:
        job = Job(uuid.uuid4().hex[:20], model, input)
        with self.lock:
            self.jobs[job.id] = job
        return job

    def wait_for(self, job: Job, seconds: float) -> None:
        until = time.monotonic() + seconds
        while job.status() == "processing" and time.monotonic() < until:
            time.sleep(0.05)

    # -- Replicate ---------------------------------------------------------------------------------
    def prediction(self, job: Job) -> dict[str, Any]:
        status = job.status()
        base = f"{self.url}/replicate/v1/predictions/{job.id}"
        body: dict[str, Any] = {
            "id": job.id, "model": job.model.split(":")[0], "version": job.model.split(":")[1] if ":" in job.model else "v-standin",
            "input": job.input, "logs": "loading weights\nrunning", "output": None, "error": None,
            "status": status, "created_at": "2026-11-26T00:00:00Z", "data_removed": False,
            "urls": {"get": base, "cancel": f"{base}/cancel", "stream": f"{self.url}/stream/{job.id}"},
        }
        if status == "succeeded":
            name = {"musicgen": "out.wav"}.get(job.behaviour, "out.mp4" if "video" in job.behaviour else "out.png")
            body["output"] = [f"{self.url}/delivery/{job.id}/{name}"]
            body["metrics"] = {"predict_time": 2.5, "total_time": 2.7}
        elif status == "failed":
            body["error"] = FAILURE
            body["logs"] += f"\nTraceback (most recent call last):\ntorch.OutOfMemoryError: {FAILURE}"
        return body

    def replicate(self, rec: Recorded, sub: str) -> Reply:
        if rec.headers.get("authorization") != f"Bearer {REPLICATE_TOKEN}":
            return Reply(401, {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token",
                               "status": 401})
        parts = sub.strip("/").split("/")
        if rec.method == "GET" and len(parts) == 4 and parts[:2] == ["v1", "models"]:
            owner, name = parts[2:]
            if name == "missing":
                return Reply(404, {"title": "Not found", "detail": f"Model {owner}/{name} not found", "status": 404})
            return Reply(200, {"url": f"https://replicate.com/{owner}/{name}", "owner": owner, "name": name,
                               "description": f"A stand-in {name.replace('-', ' ')} model", "visibility": "public",
                               "run_count": 42, "latest_version": {"id": "v-standin", "openapi_schema": {}}})
        created = None
        if rec.method == "POST" and len(parts) == 5 and parts[:2] == ["v1", "models"] and parts[4] == "predictions":
            created = self.job(f"{parts[2]}/{parts[3]}", (rec.body or {}).get("input"))
        elif rec.method == "POST" and parts == ["v1", "predictions"]:
            body = rec.body or {}
            if not body.get("version"):
                return Reply(422, {"title": "Input validation failed", "detail": "version is required", "status": 422})
            created = self.job(f"standin/versioned:{body['version']}", body.get("input"))
        if created is not None:
            if not isinstance(created.input, dict) or not created.input.get("prompt"):
                return Reply(422, {"title": "Input validation failed", "status": 422,
                                   "detail": "- input: prompt is required", "invalid_fields": [{"field": "input.prompt"}]})
            prefer = rec.headers.get("prefer", "")
            if prefer.startswith("wait"):
                self.wait_for(created, float(prefer.partition("=")[2] or 60))
            return Reply(201, self.prediction(created))
        if len(parts) >= 3 and parts[:2] == ["v1", "predictions"] and parts[2] in self.jobs:
            job = self.jobs[parts[2]]
            if rec.method == "POST" and parts[3:] == ["cancel"]:
                if job.status() == "processing":
                    job.canceled = True
                return Reply(200, self.prediction(job))
            if rec.method == "GET" and len(parts) == 3:
                return Reply(200, self.prediction(job))
        return Reply(404, {"title": "Not found", "detail": "Not found.", "status": 404})

    # -- fal ----------------------------------------------------------------------------------------
    def fal(self, rec: Recorded, sub: str) -> Reply:
        if rec.headers.get("authorization") != f"Key {FAL_KEY}":
            return Reply(401, {"detail": "Invalid authentication credentials"})
        parts = sub.strip("/").split("/")
        if "requests" in parts:
            at = parts.index("requests")
            job = self.jobs.get(parts[at + 1]) if len(parts) > at + 1 else None
            if job is None:
                return Reply(404, {"detail": "Request not found"})
            rest = parts[at + 2:]
            status = job.status()
            if rec.method == "PUT" and rest == ["cancel"]:
                if status != "processing":
                    return Reply(400, {"status": "ALREADY_COMPLETED"})
                job.canceled = True
                return Reply(202, {"status": "CANCELLATION_REQUESTED"})
            if rec.method == "GET" and rest == ["status"]:
                if status == "processing":
                    return Reply(202, {"status": "IN_PROGRESS", "request_id": job.id, "logs": [{"message": "step 1"}],
                                       "response_url": self.fal_url(job)})
                return Reply(200, {"status": "COMPLETED", "request_id": job.id, "logs": [],
                                   "metrics": {"inference_time": 0.8}, "response_url": self.fal_url(job)})
            if rec.method == "GET" and rest == []:
                if status == "processing":
                    return Reply(400, {"detail": "Request is still in progress"})
                if status == "failed":
                    return Reply(422, {"detail": [{"loc": ["body", "prompt"], "msg": FAILURE, "type": "value_error"}]})
                if status == "canceled":
                    return Reply(400, {"detail": "Request was cancelled"})
                return Reply(200, {"images": [{"url": f"{self.url}/delivery/{job.id}/out.png", "width": 2, "height": 2,
                                               "content_type": "image/png"}],
                                   "seed": 1234, "has_nsfw_concepts": [False], "prompt": (job.input or {}).get("prompt"),
                                   "timings": {"inference": 0.8}})
        if rec.method == "POST":
            body = rec.body if isinstance(rec.body, dict) else {}
            if not body.get("prompt"):
                return Reply(422, {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]})
            job = self.job("/".join(parts), body)
            return Reply(200, {"request_id": job.id, "status": "IN_QUEUE", "queue_position": 0,
                               "response_url": self.fal_url(job), "status_url": f"{self.fal_url(job)}/status",
                               "cancel_url": f"{self.fal_url(job)}/cancel"})
        return Reply(404, {"detail": f"no route {rec.method} {sub}"})

    def fal_url(self, job: Job) -> str:
        app = "/".join(job.model.split("/")[:2])
        return f"{self.url}/fal/{app}/requests/{job.id}"


class _MediaHandler(_Handler):
    apis: MediaAPIs

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _route(self, rec: Recorded) -> Reply:
        for prefix, fn in (("/replicate", self.apis.replicate), ("/fal", self.apis.fal)):
            if rec.path.startswith(prefix + "/"):
                return fn(rec, rec.path[len(prefix):])
        if rec.path.startswith("/delivery/"):
            job_id, name = rec.path.split("/")[2:4]
            if name.endswith(".wav"):
                return Reply(200, raw=tiny_wav(0.5), headers={"Content-Type": "audio/wav"})
            if name.endswith(".mp4"):
                return Reply(200, raw=MP4, headers={"Content-Type": "video/mp4"})
            return Reply(200, raw=PNG, headers={"Content-Type": "image/png"})
        return super()._route(rec)

