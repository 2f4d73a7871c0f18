"""Media bombs: a few kilobytes that declare an hour of audio or 256 million pixels, and outputs that grow
without end. Each must fail with an error naming the cap and its setting, leave no blob (whole or partial)
behind, and leave the worker serving the next job.

The header checks and the output cap run in this process against a real blob store and a loopback HTTP
server; the bombs then go through the real ffmpeg, whisper and tesseract services in Docker (one
worker, one container per service, shared by every probe). The bombs are made here, with the host's
ffmpeg and Pillow.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import WorkerProcess

from mediaconduit_worker.assets import Audio, Image, asset_from_json
from mediaconduit_worker.blobs import INCOMING, BlobStore
from mediaconduit_worker.errors import MediaLimitError
from mediaconduit_worker.media import save_response
from mediaconduit_worker.mediainfo import read_info
from mediaconduit_worker.settings import get_settings

BOMB_SIDE = 16000
HOUR = 3600


def ffmpeg(*args: str) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is not installed on this host (scripts/ci-setup.sh installs it)", pytrace=False)
    proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def without_total(flac: bytes) -> bytes:
    """The FLAC with STREAMINFO's total-samples field zeroed: "length unknown", so no header says how long."""
    data = bytearray(flac)
    bits = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = bits.to_bytes(8, "big")
    return bytes(data)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """flac: an hour of silence in about 15 KB (declared in STREAMINFO); flac_undeclared: the same with no
    total; png: 16000 x 16000 pixels in about 30 KB; mkv: a small video whose container declares
    16000 x 16000 frames (a format the worker's header reader does not know); speech/small: good media."""
    from PIL import Image as Picture

    folder = tmp_path_factory.mktemp("bombs")
    flac = folder / "hour.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", str(HOUR), "-c:a", "flac", "-frame_size", "65535",
           "-sample_fmt", "s16", str(flac))
    (folder / "undeclared.flac").write_bytes(without_total(flac.read_bytes()))
    Picture.new("1", (BOMB_SIDE, BOMB_SIDE)).save(folder / "big.png", optimize=True)
    small_mkv = folder / "small.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=black:s=256x256", "-frames:v", "1", "-c:v", "ffv1", str(small_mkv))
    raw = small_mkv.read_bytes()
    side = (256).to_bytes(2, "big")
    assert raw.count(b"\xb0\x82" + side) == 1 and raw.count(b"\xba\x82" + side) == 1  # PixelWidth, PixelHeight
    big = BOMB_SIDE.to_bytes(2, "big")
    (folder / "big.mkv").write_bytes(raw.replace(b"\xb0\x82" + side, b"\xb0\x82" + big).replace(b"\xba\x82" + side,
                                                                                             b"\xba\x82" + big))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "2", str(folder / "tone.wav"))
    Picture.new("RGB", (320, 200), "white").save(folder / "small.png")
    return {"flac": flac, "flac_undeclared": folder / "undeclared.flac", "png": folder / "big.png",
            "mkv": folder / "big.mkv", "tone": folder / "tone.wav", "small_png": folder / "small.png"}


def stored(store: BlobStore) -> set[str]:
    """Every file in the store: complete blobs and writes in progress alike."""
    return {str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file()}


# -- in this process: header facts, the caps at the job's input, the output cap on a real stream -------
def test_headers_tell_size_and_length_without_decoding(bombs: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image as Picture

    for fmt in ("jpeg", "gif", "bmp", "tiff", "webp"):
        Picture.new("RGB", (300, 200)).save(tmp_path / f"x.{fmt}", format=fmt.upper())
        info = read_info(open(tmp_path / f"x.{fmt}", "rb"))
        assert info is not None and (info.format, info.width, info.height) == (fmt, 300, 200), fmt
    with open(bombs["png"], "rb") as fh:
        assert read_info(fh) == read_info(io.BytesIO(bombs["png"].read_bytes()))
    info = read_info(open(bombs["png"], "rb"))
    assert info is not None and info.pixels == BOMB_SIDE ** 2 and bombs["png"].stat().st_size < 100_000
    info = read_info(open(bombs["flac"], "rb"))
    assert info is not None and info.seconds == HOUR and bombs["flac"].stat().st_size < 100_000
    info = read_info(open(bombs["flac_undeclared"], "rb"))
    assert info is not None and info.seconds is None
    info = read_info(open(bombs["tone"], "rb"))
    assert info is not None and info.format == "wav" and info.seconds == pytest.approx(2.0, abs=0.01)
    assert read_info(open(bombs["mkv"], "rb")) is None


def test_a_jobs_input_over_a_media_cap_is_refused_before_it_is_decoded(bombs: dict[str, Path]) -> None:
    png = {"type": "image", "data": base64.b64encode(bombs["png"].read_bytes()).decode(), "mime_type": "image/png"}
    with pytest.raises(MediaLimitError, match=r"input: the png image is 16000 x 16000 = 256,000,000 pixels.*"
                                              r"MEDIACONDUIT_MAX_MEDIA_PIXELS"):
        asset_from_json(png)
    flac = Audio.from_path(bombs["flac"]).to_json()  # as a blob reference, the way a producer sends media
    with pytest.raises(MediaLimitError, match=r"input\[0\]: the flac audio declares 3,600.0 s.*MEDIACONDUIT_MAX_MEDIA_SECONDS"):
        asset_from_json(flac, "input[0]")
    small = Image.from_path(bombs["small_png"]).to_json()
    assert asset_from_json(small).size == bombs["small_png"].stat().st_size


class Endless:
    """A loopback server streaming zeros: ``/declared/N`` with a Content-Length of N, ``/chunked/N`` without."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        endless = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                kind, size = self.path.strip("/").split("/")
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                if kind == "declared":
                    self.send_header("Content-Length", size)
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent, chunk = 0, b"\0" * 65536
                try:
                    while sent < int(size):
                        self.wfile.write(chunk if kind == "declared" else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        sent += len(chunk)
                    if kind == "chunked":
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                endless.sent[self.path] = sent

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endless() -> Iterator[Endless]:
    server = Endless()
    yield server
    server.server.shutdown()


@pytest.mark.parametrize("kind", ["declared", "chunked"])
def test_a_streamed_output_stops_at_the_cap_and_leaves_nothing(endless: Endless, kind: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cap = 1 << 20
    monkeypatch.setattr(get_settings(), "max_output_bytes", cap)
    store = BlobStore()
    before = stored(store)
    with httpx.Client() as client:
        response = client.send(client.build_request("GET", f"{endless.url}/{kind}/{64 << 20}"), stream=True)
        with pytest.raises(MediaLimitError, match=r"test download: the output holds .*over the output cap of "
                                                  r"1,048,576 bytes \(MEDIACONDUIT_MAX_OUTPUT_BYTES\)"):
            save_response(response, Audio, what="test download")
    assert stored(store) == before and not list((store.root / INCOMING).iterdir())
    with httpx.Client() as client:  # under the cap, the same path stores the whole body
        response = client.send(client.build_request("GET", f"{endless.url}/{kind}/{cap // 2}"), stream=True)
        asset = save_response(response, Audio, what="test download")
    assert asset.size == cap // 2 and store.has(asset.sha256 or "")


def test_an_in_memory_output_over_the_cap_is_never_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "max_output_bytes", 1000)
    store = BlobStore()
    before = stored(store)
    with pytest.raises(MediaLimitError, match=r"the audio asset \(audio/wav\) holds 1,001 bytes.*MEDIACONDUIT_MAX_OUTPUT_BYTES"):
        Audio(data=b"\1" * 1001).to_json()
    assert stored(store) == before


# -- through the real services in Docker --------------------------------------------------------------
CAPABILITIES = ["audio-to-audio", "video-to-image", "audio-to-text", "image-to-text"]
#: The caps the attacked worker runs with: the defaults' order of size, small enough to hit in seconds.
WORKER_CAPS = {"MEDIACONDUIT_MAX_OUTPUT_BYTES": str(32 << 20), "MEDIACONDUIT_MAX_MEDIA_SECONDS": "600",
               "MEDIACONDUIT_MAX_MEDIA_PIXELS": "50000000"}


@pytest.fixture(scope="module")
def worker(provider_urls: dict[str, str]) -> Iterator[WorkerProcess]:
    w = WorkerProcess(CAPABILITIES, concurrency=1, env=WORKER_CAPS).wait_ready()
    yield w
    w.stop()


def refused(job: Any, *names: str) -> str:
    """Run ``job`` (an AsyncResult): it must fail with a MediaLimitError whose message holds every name."""
    with pytest.raises(Exception) as err:
        job.get(timeout=300)
    message = str(err.value)
    assert type(err.value).__name__ == "MediaLimitError", message
    for name in names:
        assert name in message, message
    return message


def assert_nothing_kept(before: set[str]) -> None:
    store = BlobStore()
    assert stored(store) == before, sorted(stored(store) - before)


@pytest.mark.docker
def test_the_flac_bomb_through_convert_audio(worker: WorkerProcess, provider_urls: dict[str, str],
                                             bombs: dict[str, Path]) -> None:
    from mediaconduit_worker import Audio, transform

    declared = Audio.from_path(bombs["flac"]).to_json()
    undeclared = Audio.from_path(bombs["flac_undeclared"]).to_json()
    tone = Audio.from_path(bombs["tone"]).to_json()
    before = stored(BlobStore())
    stereo = {"format": "wav", "sample_rate": 48000, "channels": 2}
    # The header says an hour: refused on the worker, before the service sees a byte.
    refused(transform.delay(declared, provider_urls["ffmpeg"], "convert-audio", stereo),
            "3,600.0 s", "MEDIACONDUIT_MAX_MEDIA_SECONDS")
    # No header says: the service decodes 600 s at most, and ffmpeg stops writing at the output cap.
    refused(transform.delay(undeclared, provider_urls["ffmpeg"], "convert-audio", stereo),
            "33,554,432 bytes", "MEDIACONDUIT_MAX_OUTPUT_BYTES")
    # Mono at 8 kHz stays under the output cap: the duration cap (-t) ends it.
    refused(transform.delay(undeclared, provider_urls["ffmpeg"], "convert-audio", {"format": "wav"}),
            "at least 600 s", "MEDIACONDUIT_MAX_MEDIA_SECONDS")
    assert_nothing_kept(before)
    good = transform.delay(tone, provider_urls["ffmpeg"], "convert-audio", {"format": "flac"}).get(timeout=300)
    assert BlobStore().get(good["asset"]["uri"])[:4] == b"fLaC"


@pytest.mark.docker
def test_the_flac_bomb_through_whisper(worker: WorkerProcess, provider_urls: dict[str, str],
                                       bombs: dict[str, Path]) -> None:
    from mediaconduit_worker import Audio, transform

    declared = Audio.from_path(bombs["flac"]).to_json()
    undeclared = Audio.from_path(bombs["flac_undeclared"]).to_json()
    tone = Audio.from_path(bombs["tone"]).to_json()
    before = stored(BlobStore())
    refused(transform.delay(declared, provider_urls["whisper"], "whisper-stt"), "3,600.0 s", "MEDIACONDUIT_MAX_MEDIA_SECONDS")
    # No header says: the service's ffmpeg decodes 600 s at most (-t) and refuses what reached it.
    refused(transform.delay(undeclared, provider_urls["whisper"], "whisper-stt"),
            "at least 600 s", "MEDIACONDUIT_MAX_MEDIA_SECONDS")
    assert_nothing_kept(before)
    result = transform.delay(tone, provider_urls["whisper"], "whisper-stt").get(timeout=300)
    assert result["asset"]["type"] == "text" and isinstance(result["asset"]["content"], str)


@pytest.mark.docker
def test_the_png_bomb_through_thumbnail_and_ocr(worker: WorkerProcess, provider_urls: dict[str, str],
                                                bombs: dict[str, Path]) -> None:
    from mediaconduit_worker import Image, Video, transform

    png = Image.from_path(bombs["png"]).to_json()
    mkv = Video.from_path(bombs["mkv"]).to_json()
    small = Image.from_path(bombs["small_png"]).to_json()
    before = stored(BlobStore())
    refused(transform.delay({**png, "type": "video"}, provider_urls["ffmpeg"], "thumbnail", {"width": 320}),
            "16000 x 16000 = 256,000,000 pixels", "MEDIACONDUIT_MAX_MEDIA_PIXELS")
    refused(transform.delay(png, provider_urls["tesseract"], "tesseract-ocr"),
            "16000 x 16000", "MEDIACONDUIT_MAX_MEDIA_PIXELS")
    # A container the worker cannot read declares the frames: ffprobe in the service refuses them.
    refused(transform.delay(mkv, provider_urls["ffmpeg"], "thumbnail"),
            "16000 x 16000 = 256,000,000 pixels", "MEDIACONDUIT_MAX_MEDIA_PIXELS")
    assert_nothing_kept(before)
    thumb = transform.delay({**small, "type": "video"}, provider_urls["ffmpeg"], "thumbnail", {"width": 160}).get(
        timeout=300)
    assert thumb["asset"]["metadata"]["probe"]["streams"][0]["width"] == 160


def running(client: Any, service_id: str) -> list[Any]:
    """This run's containers of a service: one per source it was named by (a git URL, a folder), as other
    tests of the run may have started it from another."""
    from mediaconduit_worker.services.labels import SCOPE, SERVICE, scope

    found = client.containers.list(filters={"label": [f"{SERVICE}={service_id}", f"{SCOPE}={scope()}"]})
    assert found, f"{service_id}: no running container"
    return list(found)


@pytest.mark.docker
def test_tesseract_reads_only_the_image_it_was_sent(worker: WorkerProcess, provider_urls: dict[str, str],
                                                    bombs: dict[str, Path], docker_engine: Any) -> None:
    """Tesseract takes a body that is not an image as a list of files to read, inside its container."""
    from mediaconduit_worker import Image, transform

    listing = base64.b64encode(b"/app/server.py\n/etc/hostname\n").decode()
    with pytest.raises(Exception) as err:
        transform.delay({"type": "image", "data": listing, "mime_type": "image/png"}, provider_urls["tesseract"],
                        "tesseract-ocr").get(timeout=300)
    assert type(err.value).__name__ == "InvalidInputError" and "tesseract reads images only" in str(err.value), str(err.value)
    # The service refuses it too, to whoever reaches it.
    for container in running(docker_engine, "tesseract-service"):
        port = container.ports["8884/tcp"][0]["HostPort"]
        reply = httpx.post(f"http://127.0.0.1:{port}/ocr", content=b"/app/server.py\n", timeout=60)
        assert reply.status_code == 415 and "not an image" in reply.json()["error"], reply.text
    good = transform.delay(Image.from_path(bombs["small_png"]).to_json(), provider_urls["tesseract"],
                           "tesseract-ocr").get(timeout=300)
    assert good["asset"]["type"] == "text"


@pytest.mark.docker
def test_service_containers_run_with_the_limits_their_manifests_set(worker: WorkerProcess, provider_urls: dict[str, str],
                                                                    bombs: dict[str, Path], docker_engine: Any) -> None:
    """ffmpeg's manifest sets docker.resources; whisper's compose file sets deploy.resources.limits."""
    from mediaconduit_worker import Audio, Image, transform

    tone = Audio.from_path(bombs["tone"]).to_json()
    transform.delay(tone, provider_urls["ffmpeg"], "convert-audio", {"format": "flac"}).get(timeout=300)
    transform.delay(tone, provider_urls["whisper"], "whisper-stt").get(timeout=300)
    transform.delay(Image.from_path(bombs["small_png"]).to_json(), provider_urls["tesseract"], "tesseract-ocr").get(
        timeout=300)
    for service, memory, cpus, pids in [("ffmpeg-service", 1 << 30, 1.0, 256), ("whisper-service", 1 << 30, 1.0, 128),
                                        ("tesseract-service", 1 << 30, 1.0, 128)]:
        for container in running(docker_engine, service):  # every one, whichever source started it
            host = container.attrs["HostConfig"]
            assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["PidsLimit"]) == (
                memory, memory, int(cpus * 1e9), pids), (service, container.labels)
