"""Blob garbage collection on a real blob store and the suite's real Redis: blobs a stored result, a cached
result or a queued job names are kept, as are young ones; old orphans and unfinished writes go, by
``mediaconduit blobs gc`` and by a worker's own periodic sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support.remote import QueueWorker

from mediaconduit_worker.blobs import INCOMING, BlobStore

DAY = 24 * 3600


def aged(store: BlobStore, data: bytes, days: float = 2) -> str:
    """A blob of ``data`` whose file was last touched ``days`` ago."""
    _uri, digest = store.put(data)
    past = time.time() - days * DAY
    os.utime(store.path_for(digest), (past, past))
    return digest


def gc(blob_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "blobs", "gc", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MEDIACONDUIT_BLOB_DIR": str(blob_dir)})


def test_gc_keeps_what_results_caches_and_queued_jobs_name(tmp_path: Path, echo_url: str) -> None:
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.cache import PREFIX

    store = BlobStore(tmp_path / "blobs")
    in_result, in_cache, in_queue, orphan = (aged(store, f"{name}-{uuid.uuid4()}".encode())
                                             for name in ("result", "cache", "queue", "orphan"))
    _uri, young = store.put(f"young-{uuid.uuid4()}".encode())
    unfinished = store.root / INCOMING / ".tmp-crashed"
    unfinished.write_bytes(b"half a write")
    past = time.time() - 2 * DAY
    os.utime(unfinished, (past, past))

    task_id = f"gc-{uuid.uuid4()}"
    app.backend.store_result(task_id, {"asset": {"type": "image", "uri": f"blob://sha256/{in_result}"}}, "SUCCESS")
    cache_key = f"{PREFIX}gc-test-{uuid.uuid4().hex}"
    app.backend.client.set(cache_key, json.dumps({"result": {"asset": {"sha256": in_cache}}}), ex=600)
    queue = f"gc-nobody-{uuid.uuid4().hex[:6]}"  # no worker consumes it: the job stays queued, its body base64
    transform.apply_async(({"type": "image", "uri": f"blob://sha256/{in_queue}"}, echo_url, "upper", {}), queue=queue)
    app.amqp.queues.pop(queue, None)
    try:
        dry = gc(store.root, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        figures = json.loads(dry.stdout)
        assert (figures["removed"], figures["partial_writes_removed"], figures["dry_run"]) == (1, 1, True), figures
        assert figures["kept_referenced"] == 3 and figures["kept_young"] == 1 and store.has(orphan)

        done = gc(store.root)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("removed 1 blobs (0.0 MiB) and 1 unfinished writes; kept 3 referenced"), done.stdout
        assert not store.has(orphan) and not unfinished.exists()
        assert all(store.has(d) for d in (in_result, in_cache, in_queue, young))

        short = gc(store.root, "--grace", "0", "--json")  # no grace: only the references keep a blob
        assert json.loads(short.stdout)["removed"] == 1 and not store.has(young)
        assert all(store.has(d) for d in (in_result, in_cache, in_queue))
    finally:
        app.backend.forget(task_id)
        app.backend.client.delete(cache_key, queue)


def test_a_blob_a_job_reads_is_claimed_afresh(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = aged(store, b"read by a job")
    assert store.claim(digest) and time.time() - store.path_for(digest).stat().st_mtime < 60
    assert not store.claim("0" * 64)
    again = aged(store, b"stored again")
    store.put(b"stored again")  # already there: not rewritten, but its time is refreshed
    assert time.time() - store.path_for(again).stat().st_mtime < 60


def test_gc_without_redis_fails_in_one_line(tmp_path: Path) -> None:
    from conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "blobs", "gc"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MEDIACONDUIT_BLOB_DIR": str(tmp_path),
                                            "MEDIACONDUIT_BROKER_URL": url, "MEDIACONDUIT_RESULT_BACKEND": url})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: blob gc: cannot reach Redis at {url} ("), proc.stderr
    proc = gc(tmp_path, "--grace", "soon")
    assert proc.returncode == 2 and proc.stderr.startswith("error: Invalid value for '--grace'"), proc.stderr


@pytest.mark.parametrize("interval", [2])
def test_a_worker_sweeps_by_itself_each_interval(tmp_path: Path, interval: int) -> None:
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.blobgc import LOCK_KEY

    store = BlobStore(tmp_path / "blobs")
    orphan = aged(store, b"nobody wants me")
    app.backend.client.delete(LOCK_KEY)  # whichever worker of the suite swept last, it is this one's turn
    worker = QueueWorker(f"gc-{uuid.uuid4().hex[:6]}", {"MEDIACONDUIT_BLOB_DIR": str(store.root),
                                                       "MEDIACONDUIT_BLOB_GC_INTERVAL": str(interval)})
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 60
        while store.has(orphan) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not store.has(orphan), worker.log_text()[-3000:]
        assert "blob gc: removed 1 blobs" in worker.log_text()
        second = aged(store, b"nor me")
        while store.has(second) and time.monotonic() < deadline:  # the next interval's sweep
            time.sleep(0.2)
        assert not store.has(second), worker.log_text()[-3000:]
    finally:
        worker.stop()
        app.backend.client.delete(LOCK_KEY)
