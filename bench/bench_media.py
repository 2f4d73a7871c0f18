"""Media of any size: a 500 MB generated video through ``extract-audio`` then ``convert-audio``.

    python bench/bench_media.py [--mb 500]

Targets: the worker's RSS grows by at most 64 MB over the whole run, and no Redis command (job
message, result, event) exceeds 64 KB: media travel as blob references, streamed both ways.
Yardstick, same run and file: the host's own ffmpeg extracting the audio straight from the file
(no queue, no container, no copies). Needs a Docker engine, the base image and ffmpeg on the host.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, isolated_environment, row

CAPABILITIES = ["video-to-audio", "audio-to-audio"]
RSS_LIMIT_MB = 64
MESSAGE_LIMIT = 64 << 10


def make_video(path: Path, mb: int) -> None:
    """Uncompressed 640x360 frames (about 345 KB each) with a tone: size grows fast, encoding costs nothing."""
    seconds = mb * (1 << 20) / (640 * 360 * 1.5 * 25)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", f"{seconds:.2f}",
                    "-c:v", "rawvideo", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", str(path)], check=True)


def start_worker() -> subprocess.Popen[bytes]:
    """``mediaconduit worker`` for the two capabilities, one job at a time, as production runs it."""
    import socket

    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.status import wait_for_workers

    name = f"media-bench@{socket.gethostname()}"
    cmd = [sys.executable, "-m", "mediaconduit_worker.cli", "worker", "-c", "1", "-n", name, "-l", "WARNING"]
    for cap in CAPABILITIES:
        cmd += ["--capability", cap]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)  # no banner between the figures
    wait_for_workers(app, destination=[name], timeout=120, alive=lambda: proc.poll() is None)
    return proc


def provider_folder(work: Path) -> str:
    """The ffmpeg provider as a local folder whose service is the local ffmpeg-service folder."""
    folder = work / "ffmpeg-provider"
    shutil.copytree(REPO / "providers" / "ffmpeg-provider", folder, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = folder / "MediaConduit.provider.yml"
    data = yaml.safe_load(manifest.read_text())
    data["serviceUrl"] = str(REPO / "services" / "ffmpeg-service")
    manifest.write_text(yaml.safe_dump(data))
    return str(folder)


class RssSampler(threading.Thread):
    """Peak RSS of the worker's processes (the main one and its pool children), sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.peak: dict[int, int] = {}
        self.running = True

    def sample(self) -> dict[int, int]:
        import psutil

        found = {}
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                found[proc.pid] = proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return found

    def run(self) -> None:
        while self.running:
            for pid, rss in self.sample().items():
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
            time.sleep(0.05)


class RedisWatch(threading.Thread):
    """Every command Redis executes (MONITOR): the largest, by the length of its arguments."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(url)
        self.largest = (0, "")
        self.count = 0

    def run(self) -> None:
        import redis

        try:
            self._watch()
        except redis.ConnectionError:
            pass  # Redis stopped at the end of the run

    def _watch(self) -> None:
        with self.client.monitor() as monitor:
            for entry in monitor.listen():
                command = str(entry.get("command", ""))
                self.count += 1
                if len(command) > self.largest[0]:
                    self.largest = (len(command), command.split(" ", 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=500, help="size of the generated video")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("bench_media: ffmpeg is not installed on this host (scripts/ci-setup.sh installs it)")

    home = isolated_environment()
    work = Path(tempfile.mkdtemp(prefix="mediaconduit-bench-media-"))
    from mediaconduit_worker import Video, transform
    from mediaconduit_worker.cli.worker import stop_process
    from mediaconduit_worker.services import ServiceRegistry
    from mediaconduit_worker.settings import get_settings

    worker = start_worker()
    try:
        provider = provider_folder(work)
        warm = work / "warm.mkv"
        make_video(warm, 2)
        t = time.perf_counter()
        transform.delay(Video.from_path(warm).to_json(), provider, "extract-audio").get(timeout=900)
        row("warm-up: load provider, build + start service", time.perf_counter() - t, "s")

        big = work / "big.mkv"
        t = time.perf_counter()
        make_video(big, args.mb)
        size_mb = big.stat().st_size / (1 << 20)
        row("generated video (rawvideo + PCM, Matroska)", size_mb, "MB", f"in {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(big), "-vn", "-c:a", "pcm_s16le",
                        "-ar", "16000", "-ac", "1", str(work / "yardstick.wav")], check=True)
        yardstick = time.perf_counter() - t
        row("yardstick: host ffmpeg extract-audio, file to file", yardstick, "s")

        sampler = RssSampler(worker.pid)
        baseline = sampler.sample()
        watch = RedisWatch(get_settings().effective_broker_url)
        watch.start()
        time.sleep(0.2)
        sampler.start()
        t = time.perf_counter()
        video = Video.from_path(big)
        handed = time.perf_counter() - t
        t = time.perf_counter()
        audio = transform.delay(video.to_json(), provider, "extract-audio",
                                {"format": "wav", "sample_rate": 16000, "channels": 1}).get(timeout=1800)
        extract = time.perf_counter() - t
        t = time.perf_counter()
        final = transform.delay(audio, provider, "convert-audio", {"format": "flac"}).get(timeout=1800)
        convert = time.perf_counter() - t
        time.sleep(0.3)
        sampler.running = False
        sampler.join()

        row("Video.from_path into the blob store (chunked copy)", handed, "s")
        row("extract-audio through the queue + container", extract, "s", f"yardstick x{extract / yardstick:.1f}")
        row("convert-audio (wav -> flac) through the queue", convert, "s")
        row("  output sizes: wav / flac", audio["asset"]["size"] / (1 << 20), "MB",
            f"/ {final['asset']['size'] / (1 << 20):.2f} MB")
        growth = max(sampler.peak.get(pid, 0) - rss for pid, rss in baseline.items()) / (1 << 20)
        if any(pid not in baseline for pid in sampler.peak):
            print("  note: the worker started new processes during the run; growth counts the original ones")
        row("worker RSS growth, peak over baseline (any process)", growth, "MB",
            f"target <= {RSS_LIMIT_MB} MB: {'OK' if growth <= RSS_LIMIT_MB else 'OVER'}")
        row("worker RSS baseline (largest process)", max(baseline.values()) / (1 << 20), "MB",
            f"vs the video: {size_mb:.0f} MB")
        largest, verb = watch.largest
        row(f"largest Redis command ({verb}, of {watch.count})", largest / 1024, "KB",
            f"target <= 64 KB: {'OK' if largest <= MESSAGE_LIMIT else 'OVER'}")
        if growth > RSS_LIMIT_MB or largest > MESSAGE_LIMIT:
            sys.exit(1)
    finally:
        stop_process(worker)
        registry = ServiceRegistry()
        registry.remove_all()
        registry.remove_images()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
