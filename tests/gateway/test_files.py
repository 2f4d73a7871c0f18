"""Files through the HTTP API: uploads (raw and multipart) into the blob store, downloads with Range,
only for the tenant that uploaded a file or whose job made it, and the upload cap."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
import wave
from collections.abc import Iterator

import pytest
import yaml
from conftest import WorkerProcess, publish
from support.media_provider import MANIFEST, PROVIDER, reversed_wav

from mediaconduit_worker.blobs import BlobStore

from .conftest import API, MAX_UPLOAD


def test_a_raw_upload_is_stored_by_its_digest_and_served_with_range(alice: API) -> None:
    data = os.urandom(300_000)
    up = alice.call("uploadFile", content=data, headers={"Content-Type": "image/png"})
    assert up.status_code == 201, up.text
    out = up.json()
    digest = hashlib.sha256(data).hexdigest()
    assert out["uri"] == f"blob://sha256/{digest}" and out["size"] == len(data) and out["content_type"] == "image/png"
    assert BlobStore().path_for(digest).read_bytes() == data
    whole = alice.call("downloadFile", {"sha256": digest})
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "image/png"
    part = alice.call("downloadFile", {"sha256": digest}, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    tail = alice.call("downloadFile", {"sha256": digest}, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    beyond = alice.call("downloadFile", {"sha256": digest}, headers={"Range": f"bytes={len(data) + 5}-"})
    assert beyond.status_code == 416


def test_a_multipart_upload_keeps_its_parts_type(alice: API) -> None:
    data = b"RIFF" + os.urandom(5000)
    up = alice.call("uploadFile", files={"file": ("a.wav", data, "audio/wav")})
    assert up.status_code == 201, up.text
    assert up.json()["sha256"] == hashlib.sha256(data).hexdigest() and up.json()["content_type"] == "audio/wav"
    assert alice.call("downloadFile", {"sha256": up.json()["sha256"]}).content == data


def test_another_tenant_gets_404_for_a_file_and_cannot_send_it_in_a_job(alice: API, bob: API, echo_url: str) -> None:
    data = os.urandom(1000)
    digest = alice.call("uploadFile", content=data, headers={"Content-Type": "application/octet-stream"}).json()["sha256"]
    seen = bob.call("downloadFile", {"sha256": digest})
    assert seen.status_code == 404 and seen.json()["value"] == digest
    assert bob.call("downloadFile", {"sha256": "0" * 64}).json()["title"] == seen.json()["title"]
    job = bob.call("createJob", json={"input": {"type": "image", "uri": f"blob://sha256/{digest}"},
                                      "provider": echo_url, "model": "echo"})
    assert job.status_code == 422 and job.json()["field"] == "/input" and digest in job.json()["value"]
    assert bob.call("downloadFile", {"sha256": "../../etc/passwd"}).status_code == 404


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local audio provider of ``support/media_provider.py`` and a worker of its audio-to-audio queue."""
    folder = tmp_path_factory.mktemp("sound")
    (folder / "provider.py").write_text(PROVIDER)
    (folder / "MediaConduit.provider.yml").write_text(yaml.safe_dump(MANIFEST))
    url = publish(folder, f"sound-{uuid.uuid4().hex[:6]}", org="tests")
    worker = WorkerProcess(["audio-to-audio"], concurrency=1).wait_ready()
    yield url
    worker.stop()


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(os.urandom(8000))
    return out.getvalue()


def test_a_jobs_output_file_is_served_to_its_tenant_only(alice: API, bob: API, sound: str) -> None:
    """A job's output blob is served to the job's tenant, before it read the job too (as after a webhook),
    and never to another tenant."""
    from mediaconduit_worker.celery_app import app

    data = _wav()
    up = alice.call("uploadFile", content=data, headers={"Content-Type": "audio/wav"}).json()
    job = alice.call("createJob", json={"input": {"type": "audio", "uri": up["uri"], "mime_type": "audio/wav"},
                                        "provider": sound, "model": "reverse"})
    assert job.status_code == 201, job.text
    result = app.AsyncResult(job.json()["id"]).get(timeout=120)  # learnt elsewhere: the job not read through the API
    digest = result["asset"]["sha256"]
    assert bob.call("downloadFile", {"sha256": digest}).status_code == 404
    got = alice.call("downloadFile", {"sha256": digest})
    assert got.status_code == 200 and got.content == reversed_wav(data)
    assert got.headers["content-type"] == "audio/wav"
    assert alice.call("getJob", {"job_id": job.json()["id"]}).json()["result"]["asset"]["sha256"] == digest
    assert bob.call("downloadFile", {"sha256": digest}).status_code == 404


def test_an_upload_over_the_cap_is_refused_and_nothing_is_kept(alice: API) -> None:
    data = os.urandom(MAX_UPLOAD + 1)
    digest = hashlib.sha256(data).hexdigest()
    too_big = alice.call("uploadFile", content=data, headers={"Content-Type": "video/mp4"})
    assert too_big.status_code == 413 and too_big.json()["field"] == "body"
    assert "MEDIACONDUIT_GATEWAY_MAX_UPLOAD_BYTES" in too_big.json()["detail"]

    def chunked():  # no Content-Length: the cap is met mid-stream
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]

    streamed = alice.call("uploadFile", content=chunked(), headers={"Content-Type": "video/mp4"})
    assert streamed.status_code == 413, streamed.text
    assert not BlobStore().has(digest)
    assert not any(BlobStore().root.joinpath("incoming").iterdir())
