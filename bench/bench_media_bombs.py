"""Media bombs with the caps off and on: what each costs the service container and the blob store.

    python bench/bench_media_bombs.py

Bombs (made here with the host's ffmpeg and zlib): a FLAC of an hour of silence (about 15 KB) sent to
``convert-audio`` at 48 kHz stereo and to whisper, once as written and once with STREAMINFO's total zeroed
(no header says how long: the services' own bounds must hold); a black RGB PNG of 16000 x 16000 pixels
(0.75 MB) sent to ``thumbnail``. "Caps off" is today's code with every cap raised out of reach and the services' containers
unlimited (copies of the service folders without their ``resources``, ``MEDIACONDUIT_SERVICE_MEMORY=16g``):
the work the bombs cost before the caps. "Caps on" is the defaults. Figures: the container's peak memory
(cgroup v1 ``memory.max_usage_in_bytes``, reset before each job; it counts the page cache of the
service's temporary files too), the most bytes the blob store held above
its size before the job (sampled every 20 ms), and what it kept. Yardstick, same run and containers: a
2-second tone and a 320 x 200 PNG through the same models. Needs a Docker engine (cgroup v1), the base
image and ffmpeg on the host.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, isolated_environment, row, stop_process

CAPABILITIES = ["audio-to-audio", "video-to-image", "audio-to-text"]
OFF = {"MEDIACONDUIT_MAX_OUTPUT_BYTES": str(1 << 40), "MEDIACONDUIT_MAX_MEDIA_SECONDS": str(10 ** 9),
       "MEDIACONDUIT_MAX_MEDIA_PIXELS": str(1 << 40), "MEDIACONDUIT_SERVICE_MEMORY": "16g"}
WHISPER_WAIT = 120
"""Seconds the uncapped whisper job may run: the hour's PCM is built in the first seconds; recognising an
hour of silence would take many minutes more, past the job's deadline."""


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def png_bomb(path: Path, side: int) -> None:
    """A black 8-bit RGB PNG, deflated row by row: never whole in memory, about 1/1000 of its pixels' bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate, rows = zlib.compressobj(9), b"\0" * (1 + 3 * side) * 100
    idat = b"".join(deflate.compress(rows) for _ in range(side // 100)) + deflate.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def make_media(work: Path) -> dict[str, Path]:
    from PIL import Image

    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "3600", "-c:a", "flac", "-frame_size", "65535",
           "-sample_fmt", "s16", str(work / "hour.flac"))
    data = bytearray((work / "hour.flac").read_bytes())
    data[18:26] = (int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    (work / "undeclared.flac").write_bytes(bytes(data))
    png_bomb(work / "big.png", 16000)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "2", str(work / "tone.wav"))
    Image.new("RGB", (320, 200), "white").save(work / "small.png")
    return {p.stem: p for p in work.iterdir()}


def pair(work: Path, name: str, unlimited: bool) -> str:
    """A folder copy of ``providers/<name>-provider`` whose service is a folder copy of its service;
    ``unlimited`` drops the service's own resource limits."""
    service = work / f"{name}-service"
    shutil.copytree(REPO / "services" / f"{name}-service", service, ignore=shutil.ignore_patterns("__pycache__"))
    if unlimited:
        manifest = service / "MediaConduit.service.yml"
        data = yaml.safe_load(manifest.read_text())
        data["docker"].pop("resources", None)
        manifest.write_text(yaml.safe_dump(data))
        compose = service / "docker-compose.yml"
        if compose.exists():
            data = yaml.safe_load(compose.read_text())
            for svc in data["services"].values():
                svc.pop("deploy", None)
            compose.write_text(yaml.safe_dump(data))
    provider = work / f"{name}-provider"
    shutil.copytree(REPO / "providers" / f"{name}-provider", provider, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = provider / "MediaConduit.provider.yml"
    data = yaml.safe_load(manifest.read_text())
    data["serviceUrl"] = str(service)
    manifest.write_text(yaml.safe_dump(data))
    return str(provider)


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.status import wait_for_workers

    name = f"bombs-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    cmd = [sys.executable, "-m", "mediaconduit_worker.cli", "worker", "-c", "1", "-n", name, "-l", "WARNING"]
    for cap in CAPABILITIES:
        cmd += ["--capability", cap]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, env={**os.environ, **env})
    wait_for_workers(app, destination=[name], timeout=120, alive=lambda: proc.poll() is None)
    return proc


def cgroup_file(source: str) -> Path:
    """The memory cgroup file of the running container started for the service folder ``source``."""
    from mediaconduit_worker.services import ServiceRegistry
    from mediaconduit_worker.services.labels import SOURCE

    found = [c for c in ServiceRegistry().managed() if c.labels.get(SOURCE) == source and c.status == "running"]
    assert len(found) == 1, f"{source}: {len(found)} running containers"
    return Path(f"/sys/fs/cgroup/memory/docker/{found[0].id}/memory.max_usage_in_bytes")


def store_bytes(root: Path) -> int:
    total = 0
    for path in root.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:
            pass
    return total


class StoreWatch(threading.Thread):
    """The most bytes the blob store held while a job ran."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.peak, self.running = root, store_bytes(root), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, store_bytes(self.root))
            time.sleep(0.02)


def measure(label: str, job: Any, service: str, yardstick: float | None = None) -> float:
    """Run ``job`` (a callable returning an AsyncResult) and print its container peak and store bytes."""
    from mediaconduit_worker.blobs import BlobStore

    limit_file = cgroup_file(service)
    limit_file.write_text("0")  # cgroup v1: resets the peak to the current usage
    root = BlobStore().root
    before = store_bytes(root)
    watch = StoreWatch(root)
    watch.start()
    try:
        job().get(timeout=WHISPER_WAIT + 60)
        outcome = "succeeded"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {str(exc)[:90]}"
    watch.running = False
    watch.join()
    peak = int(limit_file.read_text()) / (1 << 20)
    ratio = f"yardstick x{peak / yardstick:.1f}" if yardstick else "yardstick"
    row(f"{label}: container peak", peak, "MiB", ratio)
    row(f"{label}: blob store peak / kept", (watch.peak - before) / (1 << 20), "MiB",
        f"/ {(store_bytes(root) - before) / (1 << 20):.1f} MiB kept; {outcome}")
    return peak


def run(media: dict[str, Path], urls: dict[str, str], caps: str) -> None:
    from mediaconduit_worker import Audio, Image, transform

    tone, small = Audio.from_path(media["tone"]).to_json(), Image.from_path(media["small"]).to_json()
    flac, png = Audio.from_path(media["hour"]).to_json(), Image.from_path(media["big"]).to_json()
    undeclared = Audio.from_path(media["undeclared"]).to_json()
    ff, wh = urls["ffmpeg"], urls["whisper"]
    stereo = {"format": "wav", "sample_rate": 48000, "channels": 2}
    print(f"caps {caps}:")
    yard = measure("tone -> convert-audio 48k stereo", lambda: transform.delay(tone, ff, "convert-audio", stereo),
                   urls["ffmpeg-service"])
    measure("hour FLAC -> convert-audio 48k stereo", lambda: transform.delay(flac, ff, "convert-audio", stereo),
            urls["ffmpeg-service"], yard)
    measure("undeclared FLAC -> convert-audio 48k", lambda: transform.delay(undeclared, ff, "convert-audio", stereo),
            urls["ffmpeg-service"], yard)
    yard = measure("320x200 PNG -> thumbnail", lambda: transform.delay({**small, "type": "video"}, ff, "thumbnail",
                                                                        {"width": 320}), urls["ffmpeg-service"])
    measure("16000x16000 PNG -> thumbnail", lambda: transform.delay({**png, "type": "video"}, ff, "thumbnail",
                                                                     {"width": 320}), urls["ffmpeg-service"], yard)
    yard = measure("tone -> whisper", lambda: transform.delay(tone, wh, "whisper-stt"), urls["whisper-service"])
    measure("hour FLAC -> whisper", lambda: transform.apply_async((flac, wh, "whisper-stt"), time_limit=WHISPER_WAIT),
            urls["whisper-service"], yard)
    if caps != "off":  # caps off, the container is still busy recognising the first hour
        measure("undeclared FLAC -> whisper", lambda: transform.delay(undeclared, wh, "whisper-stt"),
                urls["whisper-service"], yard)


def main() -> None:
    if shutil.which("ffmpeg") is None:
        sys.exit("bench_media_bombs: ffmpeg is not installed on this host (scripts/ci-setup.sh installs it)")
    isolated_environment()
    work = Path(tempfile.mkdtemp(prefix="mediaconduit-bench-bombs-"))
    from mediaconduit_worker.services import ServiceRegistry

    try:
        media = make_media(work)
        for caps, env in (("off", OFF), ("on (defaults)", {})):
            folder = work / caps.split()[0]
            folder.mkdir()
            urls = {name: pair(folder, name, unlimited=bool(env)) for name in ("ffmpeg", "whisper")}
            urls |= {f"{name}-service": str(folder / f"{name}-service") for name in ("ffmpeg", "whisper")}
            worker = start_worker(env)
            try:
                from mediaconduit_worker import Audio, transform

                warm = Audio.from_path(media["tone"]).to_json()  # build and start both services first
                transform.delay(warm, urls["ffmpeg"], "convert-audio").get(timeout=900)
                transform.delay(warm, urls["whisper"], "whisper-stt").get(timeout=900)
                run(media, urls, caps)
            finally:
                stop_process(worker)
                ServiceRegistry().remove_all()
    finally:
        ServiceRegistry().remove_images()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
