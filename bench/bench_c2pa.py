"""What Content Credentials cost: signing a 1 MP PNG, a 5 s WAV and a large video (``docs/credentials.md``).

    python bench/bench_c2pa.py [--reps 30] [--jobs 20] [--video-mb 500]

With the development pair ``mediaconduit credentials init`` makes under the bench's MEDIACONDUIT_HOME:

- ``credentials.sign`` called directly on each file, ``--reps`` times, taking turns with the yardstick: the
  same file copied into the blob store unsigned (what storing costs without credentials); p50 of each, the
  net RSS growth per output, and the peak RSS growth of one signing in a fresh process (first and warm);
- the same files as jobs of a real worker that signs (media and record) and of one with no key (a home of
  its own, the same blob store), taking turns; p50 round trips, each worker's peak RSS growth over the
  jobs and its net growth per output;
- the ``bench_media`` video (its maker, as AVI: Matroska has no C2PA embedding, QuickTime cannot hold its
  raw frames) signed in a process of its own: its time beside the unsigned copy, and the process's peak
  RSS growth against the media path's 64 MB.

Targets: signing adds at most 200 ms to the PNG; the video's signing stays within 64 MB. Exit 1 when one
is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_media import RSS_LIMIT_MB, make_video
from common import isolated_environment, percentile, row, rss_mb, start_celery, stop_process

PNG_TARGET_MS = 200
SIGNED_QUEUE, UNSIGNED_QUEUE = "c2pa-signed", "c2pa-unsigned"

PROVIDER = '''
"""The bench's prepared files as outputs: each job stores the same file, so only signing differs."""
import time

from mediaconduit_worker import (Audio, Image, MediaCapability, MediaProvider, TextToAudioModel, TextToImageModel)


class StoredImage(TextToImageModel):
    def transform(self, input, options=None):
        started = time.perf_counter()
        prompt = self.generation_prompt(input, options, started)
        return Image.from_path({png!r}, metadata={{"generation_prompt": prompt}})


class StoredAudio(TextToAudioModel):
    def transform(self, input, options=None):
        started = time.perf_counter()
        prompt = self.generation_prompt(input, options, started)
        return Audio.from_path({wav!r}, metadata={{"generation_prompt": prompt}})


class StoredProvider(MediaProvider):
    model_classes = {{MediaCapability.TEXT_TO_IMAGE: StoredImage, MediaCapability.TEXT_TO_AUDIO: StoredAudio}}
'''
MANIFEST = {"id": "stored", "name": "Stored", "type": "local", "capabilities": ["text-to-image", "text-to-audio"],
            "main": "provider.py", "exportName": "StoredProvider",
            "models": [{"id": "png", "capabilities": ["text-to-image"]},
                       {"id": "wav", "capabilities": ["text-to-audio"]}]}


def make_png(path: Path) -> None:
    """1000x1000 RGB of random pixels: PNG cannot compress it (about 3 MB), as a worst case of its size."""
    from PIL import Image

    Image.frombytes("RGB", (1000, 1000), os.urandom(3_000_000)).save(path, format="PNG")


def make_wav(path: Path) -> None:
    """5 s of a tone, 44.1 kHz mono 16-bit (ffmpeg writes the RIFF sizes, which c2pa needs)."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=44100:duration=5", "-ac", "1", "-c:a", "pcm_s16le", str(path)],
                   check=True)


def made() -> Any:
    """What the manifest says of a bench output: created, by a trained model, as a generated output's would."""
    from mediaconduit_worker.worker.credentials import Made

    return Made(action="c2pa.created", source_type="trainedAlgorithmicMedia",
                agent={"name": "bench/c2pa", "version": "bench"},
                record={"task_id": "bench", "record_version": 2, "generation_prompt_sha256": "0" * 64,
                        "output_sha256": "0" * 64})


def signing_key() -> Any:
    from mediaconduit_worker.worker.signatures import signing_key as key

    found = key()
    if found is None:
        raise SystemExit("bench_c2pa: no signing key after 'mediaconduit credentials init'")
    return found


def direct(path: Path, kind: type[Any], reps: int) -> dict[str, float]:
    """``credentials.sign`` on ``path`` and the unsigned copy into the blob store, ``reps`` times each, taking
    turns; p50s (ms) and this process's RSS growth per signed output (MB) after a warm-up."""
    import psutil

    from mediaconduit_worker.blobs import BlobStore
    from mediaconduit_worker.worker.credentials import sign

    store, key, what = BlobStore(), signing_key(), made()
    asset = kind.from_path(path)
    for _ in range(3):  # warm-up: c2pa's context, the key parsed, the file in the page cache
        sign(asset, [], what, key)
        store.put_file(path)
    me = psutil.Process()
    before = me.memory_info().rss
    signed, copied = [], []
    for _ in range(reps):
        t = time.perf_counter()
        store.put_file(path)
        copied.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        sign(asset, [], what, key)
        signed.append((time.perf_counter() - t) * 1000)
    growth = (me.memory_info().rss - before) / (1 << 20) / reps
    return {"signed": percentile(signed, 50), "copied": percentile(copied, 50), "growth": growth}


def provider_folder(work: Path, png: Path, wav: Path) -> str:
    import yaml

    folder = work / "stored-provider"
    folder.mkdir()
    (folder / "provider.py").write_text(PROVIDER.format(png=str(png), wav=str(wav)))
    (folder / "MediaConduit.provider.yml").write_text(yaml.safe_dump(MANIFEST))
    return str(folder)


def _processes(pid: int) -> list[int]:
    import psutil

    root = psutil.Process(pid)
    return [root.pid, *(child.pid for child in root.children(recursive=True))]


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def reset_peaks(pid: int) -> dict[int, float]:
    """Each process of a worker: its peak RSS (VmHWM) reset to its RSS now (``clear_refs`` 5, proc(5)), and
    that RSS, the baseline ``peak_growth`` measures from."""
    baseline = {}
    for p in _processes(pid):
        Path(f"/proc/{p}/clear_refs").write_text("5")
        baseline[p] = _status_mb(p, "VmRSS")
    return baseline


def peak_growth(baseline: dict[int, float]) -> float:
    """The largest rise of any one process's peak RSS since ``reset_peaks`` (exact: no sampling to miss it)."""
    return max(_status_mb(p, "VmHWM") - rss for p, rss in baseline.items())


def through_workers(provider: str, jobs: int, home: Path) -> dict[str, dict[str, float]]:
    """Each model's jobs on a signing worker and on one with no key, taking turns: p50 round trips (ms) and
    each worker's RSS growth after a warm-up (MB): its peak over the jobs, and its net growth per output. The
    keyless worker has a home of its own (no development pair) and this home's blob store."""
    from mediaconduit_worker import transform

    keyless = Path(tempfile.mkdtemp(prefix="mediaconduit-bench-keyless-"))
    workers = {"signed": start_celery("mediaconduit_worker.celery_app", SIGNED_QUEUE, 1, name=SIGNED_QUEUE),
               "unsigned": start_celery("mediaconduit_worker.celery_app", UNSIGNED_QUEUE, 1, name=UNSIGNED_QUEUE,
                                        env={"MEDIACONDUIT_HOME": str(keyless),
                                             "MEDIACONDUIT_BLOB_DIR": str(home / "blobs")})}
    queues = {"signed": SIGNED_QUEUE, "unsigned": UNSIGNED_QUEUE}
    counter = iter(range(1 << 30))

    def run(model: str, which: str) -> float:
        """One job (its input new each time, so the result cache never answers); its round trip in ms."""
        t = time.perf_counter()
        sent = transform.apply_async((f"bench {next(counter)}", provider, model), queue=queues[which])
        result = sent.get(timeout=300)
        elapsed = (time.perf_counter() - t) * 1000
        signed = result["metadata"]["credentials"]["signed"]
        if signed != (which == "signed"):
            raise SystemExit(f"bench_c2pa: the {which} worker's {model} output came back signed={signed}: "
                             f"{result['metadata']['credentials'].get('reason')}")
        return elapsed

    figures: dict[str, dict[str, float]] = {}
    try:
        for model in ("png", "wav"):
            for _ in range(3):
                for which in workers:
                    run(model, which)
            before = {which: rss_mb(w.pid) for which, w in workers.items()}
            peaks = {which: reset_peaks(w.pid) for which, w in workers.items()}
            times: dict[str, list[float]] = {which: [] for which in workers}
            for _ in range(jobs):
                for which in workers:
                    times[which].append(run(model, which))
            for which, w in workers.items():
                figures[f"{model} {which}"] = {"p50": percentile(times[which], 50), "peak": peak_growth(peaks[which]),
                                               "growth": (rss_mb(w.pid) - before[which]) / jobs}
    finally:
        for w in workers.values():
            stop_process(w)
        shutil.rmtree(keyless, ignore_errors=True)
    return figures


def sign_once(path: Path) -> None:
    """Child mode: sign ``path`` twice; print the time and the peak RSS growth of each (VmHWM over RSS
    before: every byte c2pa held, however briefly). The first includes c2pa's own setup, the second is
    what the file costs a warm worker."""
    from mediaconduit_worker import Audio, Image, Video
    from mediaconduit_worker.assets import guess_mime
    from mediaconduit_worker.worker.credentials import sign

    key, what = signing_key(), made()
    kind = {"image": Image, "audio": Audio, "video": Video}[guess_mime(path.name, "").split("/")[0]]
    asset = kind.from_path(path)
    import c2pa  # noqa: F401  (loaded before the baseline: the library is not the file)

    found: dict[str, float] = {}
    for run in ("first", "warm"):
        baseline = reset_peaks(os.getpid())
        t = time.perf_counter()
        signed, _ = sign(asset, [], what, key)
        found[f"{run}_seconds"] = time.perf_counter() - t
        found[f"{run}_growth_mb"] = peak_growth(baseline)
    print(json.dumps({**found, "size": signed.size}))


def signed_once(path: Path) -> dict[str, float]:
    """``sign_once`` of ``path`` in a fresh process (nothing this one did counts in its peaks)."""
    done = subprocess.run([sys.executable, __file__, "--sign-once", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_c2pa: signing {path.name} failed:\n{done.stderr[-3000:]}")
    found: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def video(work: Path, mb: int) -> bool:
    """The video signed beside its unsigned copy; whether its signing stayed within the media path's bound."""
    from mediaconduit_worker.blobs import BlobStore

    big = work / "big.avi"
    t = time.perf_counter()
    make_video(big, mb)
    size_mb = big.stat().st_size / (1 << 20)
    row("generated video (rawvideo + PCM, AVI)", size_mb, "MB", f"in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    BlobStore().put_file(big)
    copied = time.perf_counter() - t
    found = signed_once(big)
    row("yardstick: unsigned copy into the blob store", copied, "s")
    row("signed (credentials.sign, file to file), warm", found["warm_seconds"], "s",
        f"copy x{found['warm_seconds'] / copied:.1f}")
    for run, label in (("first", "first in a process"), ("warm", "second (warm)")):
        growth = found[f"{run}_growth_mb"]
        verdict = "OK" if growth <= RSS_LIMIT_MB else "OVER"
        row(f"signing RSS peak growth, {label}", growth, "MB",
            f"target <= {RSS_LIMIT_MB} MB: {verdict} ({growth / size_mb:.2f}x the file)")
    row("  signed file's growth over the video", (found["size"] - big.stat().st_size) / 1024, "KB")
    return found["warm_growth_mb"] <= RSS_LIMIT_MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=30, help="direct signings of each file (and as many copies)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs of each model on each worker (0: no workers)")
    parser.add_argument("--video-mb", type=int, default=500, help="size of the generated video (0: no video)")
    parser.add_argument("--sign-once", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sign_once:
        sign_once(args.sign_once)
        return
    if shutil.which("ffmpeg") is None:
        sys.exit("bench_c2pa: ffmpeg is not installed on this host (scripts/ci-setup.sh installs it)")

    home = isolated_environment()
    missed: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="mediaconduit-bench-c2pa-"))
    try:
        subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "credentials", "init"], check=True,
                       stdout=subprocess.DEVNULL)
        png, wav = work / "noise.png", work / "tone.wav"
        make_png(png)
        make_wav(wav)
        print(f"signing called directly, {args.reps} times each, taking turns with an unsigned copy "
              f"(development pair, ES256):")
        from mediaconduit_worker import Audio, Image

        for label, path, kind in (("1 MP PNG", png, Image), ("5 s WAV", wav, Audio)):
            found = direct(path, kind, args.reps)
            row(f"{label} ({path.stat().st_size / (1 << 20):.2f} MB) signed, p50", found["signed"], "ms")
            row("  yardstick: unsigned copy into the blob store", found["copied"], "ms")
            added = found["signed"] - found["copied"]
            verdict = "OK" if added <= PNG_TARGET_MS else "OVER"
            row("  signing adds", added, "ms", f"target <= {PNG_TARGET_MS} ms: {verdict}" if path == png else "")
            if path == png and added > PNG_TARGET_MS:
                missed.append(f"the PNG's signing added {added:.0f} ms (target {PNG_TARGET_MS})")
            row("  net RSS growth per signed output", found["growth"], "MB")
            once = signed_once(path)
            row("  peak RSS growth signing: warm / first in process", once["warm_growth_mb"], "MB",
                f"/ {once['first_growth_mb']:.2f} MB")
        if args.jobs:
            figures = through_workers(provider_folder(work, png, wav), args.jobs, home)
            print(f"as jobs, {args.jobs} of each model on each worker, taking turns (prefork -c 1; the signing "
                  "worker signs the media and the record):")
            for model, label in (("png", "1 MP PNG"), ("wav", "5 s WAV")):
                signed, unsigned = figures[f"{model} signed"], figures[f"{model} unsigned"]
                row(f"{label} job, signing worker, p50", signed["p50"], "ms")
                row(f"{label} job, keyless worker (yardstick), p50", unsigned["p50"], "ms")
                row("  signing adds", signed["p50"] - unsigned["p50"], "ms")
                row("  worker RSS peak growth: signing / no key", signed["peak"], "MB", f"/ {unsigned['peak']:.2f} MB")
                row("  net RSS growth per output: signing / no key", signed["growth"], "MB",
                    f"/ {unsigned['growth']:.2f} MB")
        if args.video_mb:
            print(f"the bench_media video ({args.video_mb} MB asked), signed in a process of its own:")
            if not video(work, args.video_mb):
                missed.append(f"signing the video grew RSS beyond {RSS_LIMIT_MB} MB (docs/credentials.md says why)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    if missed:
        sys.exit("bench_c2pa: target missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
