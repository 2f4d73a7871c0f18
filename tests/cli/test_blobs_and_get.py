"""``mediaconduit blobs put|get`` and ``mediaconduit get TASK_ID`` as a user runs them: a real ``mediaconduit``
process, the real blob store, jobs run by a real worker on the session's Redis. Files are typed by their
bytes (a WAV named .mp4 is audio); a failure is one ``error:`` line and exit code 1, and leaves no file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support import media_provider
from support.media_provider import reversed_wav
from support.standin_apis import tiny_png, tiny_wav

sound_url, sound_worker = media_provider.sound_url, media_provider.sound_worker  # the shared fixtures

MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")


def mediaconduit(*args: str, env: dict[str, str] | None = None, text: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(MEDIACONDUIT), *args], capture_output=True, text=text, timeout=180,
                          env={**os.environ, **(env or {})})


def one_error_line(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    stderr = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def ffmpeg(*args: str) -> None:
    proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Files whose names lie about them: a WAV named .mp4, a PNG named .wav, a video named .bin, an
    audio-only MP4 container (.mp4), and a text file named .wav; and tone.wav, a sine that reads differently
    backwards."""
    folder = tmp_path_factory.mktemp("media")
    files = {"wav": folder / "speech.mp4", "png": folder / "photo.wav", "video": folder / "clip.bin",
             "m4a": folder / "song.mp4", "text": folder / "notes.wav", "tone": folder / "tone.wav"}
    files["wav"].write_bytes(tiny_wav(0.5))
    files["png"].write_bytes(tiny_png(4, 4))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=5", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-f", "mp4", str(files["video"]))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(files["m4a"]))
    files["text"].write_text("not audio at all\n" * 20)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=0.5,afade=t=in:d=0.5", "-ac", "1", "-ar", "16000",
           str(files["tone"]))
    return files



def store_root() -> Path:
    from mediaconduit_worker.blobs import BlobStore

    return BlobStore().root


def test_put_prints_each_reference_in_order_and_stores_a_file_once(media):
    names = [media["wav"], media["png"], media["video"]]
    proc = mediaconduit("blobs", "put", *map(str, names))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"blob://sha256/{sha(p)}" for p in names]
    stored = store_root() / "sha256" / sha(names[0])[:2] / sha(names[0])
    assert stored.read_bytes() == names[0].read_bytes()
    inode = stored.stat().st_ino
    again = mediaconduit("blobs", "put", *map(str, names))
    assert again.returncode == 0 and again.stdout == proc.stdout
    assert stored.stat().st_ino == inode  # not written again (a new write is renamed into place: a new inode)


def test_put_json_types_files_by_their_bytes_not_their_names(media):
    proc = mediaconduit("blobs", "put", "--json", *(str(media[k]) for k in ("wav", "png", "video", "m4a")))
    assert proc.returncode == 0, proc.stderr
    assets = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(a["type"], a["mime_type"]) for a in assets] == [
        ("audio", "audio/wav"), ("image", "image/png"), ("video", "video/mp4"), ("audio", "audio/mp4")]
    assert [a["sha256"] for a in assets] == [sha(media[k]) for k in ("wav", "png", "video", "m4a")]
    assert assets[0]["size"] == media["wav"].stat().st_size and assets[0]["uri"] == f"blob://sha256/{sha(media['wav'])}"


def test_put_of_a_file_that_is_not_media_is_one_line_naming_it(media, tmp_path):
    line = one_error_line(mediaconduit("blobs", "put", "--json", str(media["text"])))
    assert line.startswith(f"error: {media['text']}: not audio, an image or a video"), line
    missing = one_error_line(mediaconduit("blobs", "put", str(tmp_path / "nothing.wav")), code=2)  # a bad argument
    assert "nothing.wav' does not exist" in missing, missing
    assert mediaconduit("blobs", "put").returncode == 2  # no FILE: a usage error


def test_get_writes_the_blob_to_a_file_or_stdout(media, tmp_path):
    ref = mediaconduit("blobs", "put", str(media["video"])).stdout.strip()
    out = tmp_path / "deep" / "copy.mp4"
    out.parent.mkdir()
    proc = mediaconduit("blobs", "get", ref, "-o", str(out))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert out.read_bytes() == media["video"].read_bytes()
    piped = mediaconduit("blobs", "get", ref, "-o", "-", text=False)
    assert piped.returncode == 0 and piped.stdout == media["video"].read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["copy.mp4"]  # no part file left beside it


def test_get_of_a_missing_or_damaged_blob_is_one_line_and_leaves_no_file(media, tmp_path):
    out = tmp_path / "out.bin"
    absent = "blob://sha256/" + hashlib.sha256(b"never stored " + uuid.uuid4().bytes).hexdigest()
    line = one_error_line(mediaconduit("blobs", "get", absent, "-o", str(out)))
    assert line == (f"error: blob {absent} is not in the blob store {store_root()} (MEDIACONDUIT_BLOB_DIR): it was "
                    "written to a store this machine does not share")
    line = one_error_line(mediaconduit("blobs", "get", "blob://sha256/abc", "-o", str(out)))
    assert "is not a blob reference" in line, line
    data = b"will be damaged " + uuid.uuid4().bytes
    src = tmp_path / "d.bin"
    src.write_bytes(data)
    ref = f"blob://sha256/{hashlib.sha256(data).hexdigest()}"
    assert mediaconduit("blobs", "put", str(src)).stdout.strip() == ref  # not media: put stores any file
    stored = store_root() / "sha256" / ref[-64:][:2] / ref[-64:]
    stored.write_bytes(data[::-1])
    line = one_error_line(mediaconduit("blobs", "get", ref, "-o", str(out)))
    assert line == f"error: blob {ref} in {store_root()} does not match its digest: the stored copy is damaged"
    assert list(tmp_path.iterdir()) == [src]


def test_get_task_prints_its_record_and_writes_text_as_text(sound_worker, sound_url, media, tmp_path):
    from mediaconduit_worker import Audio, transform

    job = transform.delay(Audio.from_path(media["tone"]).to_json(), sound_url, "describe", {})
    result = job.get(timeout=180)
    proc = mediaconduit("get", job.id)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["metadata"]["task_id"] == job.id and record["asset"] == result["asset"]
    out = tmp_path / "talk.txt"
    assert mediaconduit("get", job.id, "-o", str(out)).returncode == 0
    assert out.read_text() == f"audio/wav {media['tone'].stat().st_size} {sha(media['tone'])}"


def test_get_task_writes_a_media_output_as_its_bytes(sound_worker, sound_url, media, tmp_path):
    from mediaconduit_worker import Audio, transform

    job = transform.delay(Audio.from_path(media["tone"]).to_json(), sound_url, "reverse", {})
    job.get(timeout=180)
    out = tmp_path / "backwards.wav"
    proc = mediaconduit("get", job.id, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == reversed_wav(media["tone"].read_bytes()) != media["tone"].read_bytes()
    # a machine whose blob store the worker did not write to: the missing blob and the store are named
    elsewhere = tmp_path / "other-store"
    line = one_error_line(mediaconduit("get", job.id, "-o", str(tmp_path / "x.wav"),
                                       env={"MEDIACONDUIT_BLOB_DIR": str(elsewhere)}))
    assert line.startswith(f"error: job {job.id}: blob blob://sha256/") and f"not in the blob store {elsewhere}" in line
    assert not (tmp_path / "x.wav").exists()


def test_a_worker_on_another_blob_store_fails_the_job_naming_the_blob_and_the_store(sound_url, media, tmp_path):
    """The producer stores the input in its blob store; a worker pointed at another folder (a machine that does
    not share it) fails the job, and its error names the blob reference and the folder it looked in."""
    from conftest import WorkerProcess

    from mediaconduit_worker import transform

    ref = mediaconduit("blobs", "put", str(media["tone"])).stdout.strip()
    elsewhere = tmp_path / "worker-store"
    queue = f"other-store-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(queue=queue, concurrency=1, env={"MEDIACONDUIT_BLOB_DIR": str(elsewhere)}).wait_ready()
    try:
        job = transform.apply_async(({"type": "audio", "uri": ref}, sound_url, "describe", {}), queue=queue)
        with pytest.raises(Exception) as failed:
            job.get(timeout=180)
    finally:
        worker.stop()
    error = str(failed.value)
    assert type(failed.value).__name__ == "InvalidInputError", error  # permanent: not retried
    assert f"blob {ref} is not in the blob store {elsewhere} (MEDIACONDUIT_BLOB_DIR)" in error, error
    assert (store_root() / "sha256" / ref[-64:][:2] / ref[-64:]).is_file()  # the producer's store holds it


def test_get_of_a_failed_or_unknown_task_is_one_line(sound_worker, sound_url, media, tmp_path):
    from mediaconduit_worker import Audio, transform

    job = transform.delay(Audio.from_path(media["tone"]).to_json(), sound_url, "describe", {"fail": True})
    with pytest.raises(Exception, match="failed on purpose"):
        job.get(timeout=180)
    line = one_error_line(mediaconduit("get", job.id, "-o", str(tmp_path / "f.txt")))
    assert line == (f"error: job {job.id} failed: ProviderExecutionError: provider 'sound' model "
                    "'describe' raised ValueError: failed on purpose"), line
    unknown = str(uuid.uuid4())
    line = one_error_line(mediaconduit("get", unknown))
    assert line == (f"error: job {unknown} has no result in the result backend (state PENDING: unknown, expired, "
                    "queued or still running)")
    assert list(tmp_path.iterdir()) == []
