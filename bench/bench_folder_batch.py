"""Folder batch benchmark: 100 one-second WAV files (ffmpeg sines, 48 kHz stereo) through a local audio
provider (``describe`` of tests/support/media_provider.py: reads each file's bytes from the blob store),
sent by ``mediaconduit batch --files DIR`` and, as the yardstick in the same run, by a Python loop of
``Audio.from_path`` plus ``transform.delay``. Both start from an empty blob store and run jobs of their
own (options differ, so no result is shared). Prints files per second (first file read to last result;
the command's includes its process start, whose fixed cost a re-run that stores and sends nothing shows),
and upload MB/s: the loop's ``from_path`` calls against the command's intake (``store_files``), each timed
into an empty store.

    python bench/bench_folder_batch.py [--files 100] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import isolated_environment, row, start_celery, stop_process
from support.media_provider import MANIFEST, PROVIDER

HOME = isolated_environment()

MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")


def make_wavs(folder: Path, count: int) -> list[Path]:
    """``count`` one-second WAVs of distinct sines (distinct bytes, so distinct blobs)."""
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"tone{i:03d}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={200 + 7 * i}:duration=1", "-ac", "2", "-ar", "48000", "-f", "wav", str(path)],
                       check=True, timeout=120)
        paths.append(path)
    return paths


def provider_folder(work: Path) -> str:
    import yaml

    folder = work / "sound-provider"
    folder.mkdir()
    (folder / "MediaConduit.provider.yml").write_text(yaml.safe_dump(MANIFEST))
    (folder / "provider.py").write_text(PROVIDER)
    return str(folder)


def empty_store() -> Path:
    """The blob store emptied, so the next run writes every file."""
    from mediaconduit_worker.blobs import BlobStore

    root = BlobStore().root
    shutil.rmtree(root / "sha256", ignore_errors=True)
    return root


def python_loop(paths: list[Path], url: str, options: dict[str, object]) -> tuple[float, float]:
    """(seconds from the first file to the last result, seconds spent in ``Audio.from_path``)."""
    from mediaconduit_worker import Audio, transform

    t = time.perf_counter()
    stored = 0.0
    pending = []
    for path in paths:
        s = time.perf_counter()
        audio = Audio.from_path(path, "audio/wav")
        stored += time.perf_counter() - s
        pending.append(transform.delay(audio.to_json(), url, "describe", options))
    for p in pending:
        assert "audio/wav" in p.get(timeout=600)["asset"]["content"]
    return time.perf_counter() - t, stored


def command(folder: Path, url: str, options: dict[str, object], out: Path) -> tuple[float, str]:
    """(wall seconds of ``mediaconduit batch --files``, its last stderr lines)."""
    t = time.perf_counter()
    proc = subprocess.run([str(MEDIACONDUIT), "batch", "--files", str(folder), "--provider", url, "--model", "describe",
                           "--options", json.dumps(options), "--out", str(out)], capture_output=True, text=True,
                          timeout=1800)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"mediaconduit batch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, proc.stderr.strip().splitlines()[-1]


def intake(paths: list[Path]) -> float:
    """Seconds ``store_files`` (the intake ``batch --files`` runs: sniff, hash, write) takes for ``paths`` into
    an empty store. Timed in this process: the blob files' own times cannot say it, as a worker reading a blob
    sets its time afresh (``BlobStore.claim``)."""
    from mediaconduit_worker.batch.files import store_files

    empty_store()
    t = time.perf_counter()
    stored = list(store_files(paths))
    elapsed = time.perf_counter() - t
    assert all(f.asset is not None and f.written for f in stored)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mc-folder-bench-"))
    paths = make_wavs(work / "tones", args.files)
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    url = provider_folder(work)
    print(f"{args.files} one-second WAVs ({megabytes:.1f} MB, 48 kHz stereo), describe on prefork -c "
          f"{args.concurrency}, embedded Redis on loopback:")
    worker = start_celery("mediaconduit_worker.celery_app", "audio-to-text", args.concurrency)
    try:
        from mediaconduit_worker import Audio, transform

        for _ in range(4):  # provider loaded in both children
            transform.delay(Audio.from_path(paths[0]).to_json(), url, "describe", {}).get(timeout=300)
        logs = {name: work / f"{name}.log" for name in ("loop", "command")}
        empty_store()
        loop_s, from_path_s = python_loop(paths, url, {"log": str(logs["loop"])})
        empty_store()
        out = work / "results.jsonl"
        command_s, summary = command(work / "tones", url, {"log": str(logs["command"])}, out)
        rerun_s, rerun_summary = command(work / "tones", url, {"log": str(logs["command"])}, out)
    finally:
        stop_process(worker)
    stored_s = intake(paths)
    ran = {name: len(log.read_text().split()) for name, log in logs.items()}
    assert ran == {"loop": args.files, "command": args.files}, ran  # every file's job ran once, in each
    assert "sent 0," in rerun_summary, rerun_summary
    row("Python loop: Audio.from_path + transform.delay", args.files / loop_s, "files/s", f"({loop_s:.2f} s)")
    row("mediaconduit batch --files (process start included)", args.files / command_s, "files/s",
        f"({command_s:.2f} s, {loop_s / command_s:.2f}x the loop's rate)")
    row("  the same less its fixed cost (the re-run's time)", args.files / (command_s - rerun_s), "files/s")
    row("re-run of the command: stores and sends nothing", rerun_s, "s")
    row("upload: Audio.from_path (copy)", megabytes / from_path_s, "MB/s", f"({from_path_s:.2f} s)")
    row("upload: batch --files' intake (sniff + hash + write)", megabytes / stored_s, "MB/s",
        f"({stored_s:.2f} s, {from_path_s / stored_s:.2f}x from_path's rate)")
    print(f"  command's summary: {summary}")


if __name__ == "__main__":
    main()
