"""Replicate and fal.ai end to end: real worker processes load the published provider repositories and
talk real HTTP to local stand-ins of the predictions API and the queue API (documented wire formats).

Covered: create/poll/succeed with output download into the blob store (files fetched without the key),
a failed prediction with its error, cancellation on the job's deadline, 429 with Retry-After, a model
looked up by name, API errors carrying the API's own text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import REPO, publish
from support.remote import QueueWorker
from support.standin_apis import PNG, Reply
from support.standin_media_apis import FAILURE, FAL_KEY, REPLICATE_TOKEN, MediaAPIs


@pytest.fixture(scope="module")
def apis() -> Iterator[MediaAPIs]:
    server = MediaAPIs().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh(apis: MediaAPIs) -> None:
    apis.reset()


@pytest.fixture(scope="module")
def urls() -> dict[str, str]:
    return {name: publish(REPO / "providers" / f"{name}-provider", f"{name}-provider") for name in ("replicate", "fal")}


@pytest.fixture(scope="module")
def worker(apis: MediaAPIs, urls: dict[str, str]) -> Iterator[QueueWorker]:
    # A one-second Prefer: wait, so slow stand-in models exercise polling after the held create.
    w = QueueWorker("media-api-tests", {**apis.env(), "REPLICATE_PREFER_WAIT": "1"}).wait_ready()
    yield w
    w.stop()


def blob(result: dict) -> bytes:
    from mediaconduit_worker.blobs import BlobStore

    return BlobStore().get(result["asset"]["uri"])


def with_deadline(worker: QueueWorker, input: str, provider: str, model: str, soft: float) -> dict:
    """A job whose message carries its own soft time limit (its deadline)."""
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app

    try:
        pending = transform.apply_async((input, provider, model, {}), queue=worker.queue, soft_time_limit=soft)
    finally:
        app.amqp.queues.pop(worker.queue, None)
    return pending.get(timeout=60)


# -- Replicate ----------------------------------------------------------------------------------------
def test_replicate_create_poll_succeed_download_and_cost(worker, urls, apis):
    result = worker.run("a lighthouse at dusk", urls["replicate"], "black-forest-labs/slow-image", {"aspect_ratio": "1:1"})
    assert blob(result) == PNG and result["asset"]["type"] == "image" and result["asset"]["mime_type"] == "image/png"
    [create] = apis.calls("/replicate/v1/models/black-forest-labs/slow-image/predictions", "POST")
    assert create.headers["authorization"] == f"Bearer {REPLICATE_TOKEN}" and create.headers["prefer"] == "wait=1"
    assert create.body == {"input": {"prompt": "a lighthouse at dusk", "aspect_ratio": "1:1"}}
    meta = result["asset"]["metadata"]
    polls = apis.calls(f"/replicate/v1/predictions/{meta['prediction_id']}", "GET")
    assert polls, "a slow prediction is polled after the held create"
    [fetch] = [r for r in apis.requests if r.path.startswith("/delivery/")]
    assert "authorization" not in fetch.headers  # output files come from a CDN: never send the key there
    assert meta["metrics"] == {"predict_time": 2.5}
    assert meta["cost"]["source"] == "unpriced" and meta["cost"]["usd"] is None  # unlisted model: no price known
    assert result["metadata"]["generation_prompt"]["prediction_id"] == meta["prediction_id"]


def test_replicate_listed_model_gets_cost_from_its_per_second_price(worker, urls, apis):
    apis.script("POST", "/replicate/v1/models/black-forest-labs/flux-schnell/predictions", Reply(201, {
        "id": "p-listed", "model": "black-forest-labs/flux-schnell", "version": "v1", "status": "succeeded",
        "output": [f"{apis.url}/delivery/p-listed/out.webp"], "metrics": {"predict_time": 2.0}, "urls": {}}))
    result = worker.run("a fox", urls["replicate"], "black-forest-labs/flux-schnell")
    # Billed by compute time: unknown before the call, priced by the provider from the prediction's metrics.
    assert result["asset"]["metadata"]["cost"] == {"total": 0.00305, "usd": 0.00305, "estimated_usd": None,
                                                   "currency": "USD", "source": "pricing", "predict_time": 2.0}
    assert not apis.calls("/replicate/v1/predictions/p-listed")  # Prefer: wait answered it: no poll


def test_replicate_audio_and_video_by_name_and_version(worker, urls, apis):
    audio = worker.run("calm piano", urls["replicate"], "meta/musicgen")
    assert audio["asset"]["type"] == "audio" and blob(audio)[:4] == b"RIFF"
    video = worker.run("a cat surfing", urls["replicate"], "standin/fast-video", {"capability": "text-to-video"})
    assert video["asset"]["type"] == "video" and video["asset"]["mime_type"] == "video/mp4"
    assert apis.calls("/replicate/v1/models/standin/fast-video", "GET")  # looked up by name
    pinned = worker.run("a cat", urls["replicate"], "standin/fast-image:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa")
    [create] = apis.calls("/replicate/v1/predictions", "POST")
    assert create.body["version"].startswith("5c7d5dc6") and pinned["asset"]["type"] == "image"


def test_replicate_failed_prediction_carries_its_error(worker, urls, apis):
    with pytest.raises(Exception) as err:
        worker.run("boom", urls["replicate"], "standin/fails")
    assert type(err.value).__name__ == "ProviderExecutionError"
    assert FAILURE in str(err.value) and "failed" in str(err.value)


def test_replicate_api_errors_carry_detail(worker, urls, apis):
    with pytest.raises(Exception) as err:
        worker.run("x", urls["replicate"], "standin/missing")
    assert "Model standin/missing not found" in str(err.value) and "404" in str(err.value)
    with pytest.raises(Exception) as err:
        worker.run("   ", urls["replicate"], "black-forest-labs/flux-schnell")
    assert "non-empty prompt" in str(err.value)


def test_replicate_cancels_on_the_jobs_deadline(worker, urls, apis):
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        with_deadline(worker, "forever", urls["replicate"], "standin/never", soft=5)
    assert "deadline" in str(err.value) and "cancelled" in str(err.value)
    assert time.monotonic() - started < 20
    [job] = apis.jobs.values()
    assert job.canceled and apis.calls(f"/replicate/v1/predictions/{job.id}/cancel", "POST")


def test_replicate_429_honours_retry_after(worker, urls, apis):
    path = "/replicate/v1/models/standin/fast-image/predictions"
    apis.script("POST", path, Reply(429, {"title": "Request was throttled.", "status": 429,
                                          "detail": "Request was throttled. Expected available in 1 second."},
                                    headers={"Retry-After": "1"}))
    result = worker.run("after a pause", urls["replicate"], "standin/fast-image")
    first, second = apis.calls(path, "POST")
    assert second.at - first.at >= 0.95 and blob(result) == PNG


# -- fal.ai -------------------------------------------------------------------------------------------
def test_fal_queue_submit_poll_fetch_download(worker, urls, apis):
    result = worker.run("a red square", urls["fal"], "fal-ai/flux/slow-schnell", {"seed": 7})
    assert blob(result) == PNG and result["asset"]["type"] == "image"
    [submit] = apis.calls("/fal/fal-ai/flux/slow-schnell", "POST")
    assert submit.headers["authorization"] == f"Key {FAL_KEY}" and submit.body == {"prompt": "a red square", "seed": 7}
    rid = result["asset"]["metadata"]["request_id"]
    assert len(apis.calls(f"/fal/fal-ai/flux/requests/{rid}/status", "GET")) >= 2  # IN_PROGRESS, then COMPLETED
    assert apis.calls(f"/fal/fal-ai/flux/requests/{rid}", "GET")
    assert result["asset"]["metadata"]["seed"] == 1234 and result["asset"]["metadata"]["metrics"] == {"inference_time": 0.8}


def test_fal_image_to_image_sends_a_data_uri(worker, urls, apis):
    first = worker.run("a square", urls["fal"], "fal-ai/flux/fast")
    result = worker.run([first, "make it blue"], urls["fal"], "fal-ai/flux/dev/image-to-image", {"strength": 0.5})
    assert result["metadata"]["generation_prompt"]["capability"] == "image-to-image"
    [submit] = apis.calls("/fal/fal-ai/flux/dev/image-to-image", "POST")
    assert submit.body["image_url"].startswith("data:image/png;base64,") and submit.body["prompt"] == "make it blue"
    assert result["metadata"]["generation_prompt"]["input"][0]["metadata"]["generation_prompt"]["model_id"] == "fal-ai/flux/fast"


def test_fal_failure_and_deadline_cancel(worker, urls, apis):
    with pytest.raises(Exception) as err:
        worker.run("boom", urls["fal"], "fal-ai/standin/fails")
    assert FAILURE in str(err.value) and "422" in str(err.value)
    with pytest.raises(Exception) as err:
        with_deadline(worker, "forever", urls["fal"], "fal-ai/standin/never", soft=5)
    assert "deadline" in str(err.value) and "cancelled" in str(err.value)
    [job] = [j for j in apis.jobs.values() if j.behaviour == "never"]
    assert job.canceled and apis.calls(f"/fal/fal-ai/standin/requests/{job.id}/cancel", "PUT")


def test_fal_rejects_a_wrong_key_with_its_detail(apis, urls):
    from mediaconduit_worker.errors import ProviderHTTPError
    from mediaconduit_worker.worker.loader import get_registry

    provider = get_registry().get(urls["fal"]).provider
    provider.configure({"api_key": "fal-wrong-key-000000", "base_url": f"{apis.url}/fal"})
    with pytest.raises(ProviderHTTPError, match="Invalid authentication credentials.*check FAL_KEY"):
        provider.get_model("fal-ai/flux/schnell").transform("x")


def test_replicate_cancels_when_the_job_is_revoked(worker, urls, apis):
    """``AsyncResult.revoke()`` of a running prediction: the job is interrupted, cancels the prediction
    (the cancel endpoint is called), ends REVOKED with when and why, and its slot takes the next job."""
    from celery.exceptions import TaskRevokedError

    pending = worker.submit("forever", urls["replicate"], "standin/never")
    deadline = time.monotonic() + 30
    while not apis.jobs and time.monotonic() < deadline:
        time.sleep(0.1)
    [job] = apis.jobs.values()
    time.sleep(1.5)  # polling by now
    sent = time.monotonic()
    pending.revoke()
    while not job.canceled and time.monotonic() < deadline:
        time.sleep(0.02)
    cancelled_after = time.monotonic() - sent
    assert job.canceled and apis.calls(f"/replicate/v1/predictions/{job.id}/cancel", "POST")
    with pytest.raises(TaskRevokedError, match="cancelled at .*: revoked"):
        pending.get(timeout=30)
    assert pending.backend.get_task_meta(pending.id)["revoked"]["state"] == "CANCELLED"
    print(f"revoke() to the cancel endpoint called: {cancelled_after:.2f}s; to REVOKED stored: "
          f"{time.monotonic() - sent:.2f}s")
    assert worker.run("next", urls["replicate"], "standin/fast-image")["asset"]
