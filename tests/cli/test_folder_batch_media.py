"""``mediaconduit batch --files`` with the real media engines: recordings made here by espeak-ng, videos by
ffmpeg, then Whisper (PocketSphinx behind its API) and ffmpeg in real containers, run by a real worker.
Transcripts come back as files named after their recordings and hold their words."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WorkerProcess

pytestmark = pytest.mark.docker
MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")
SPEECH = ["-v", "en-us+f2", "-s", "120"]  # what PocketSphinx's English model hears best
SENTENCES = {  # sentences PocketSphinx hears at least half of, from this voice
    "talk1": "my name is john and i live in a small house near the river",
    "talk2": "i like to read books in the morning",
    "talk3": "i want to go home now",
    "talk4": "i want to read a book",
    "talk5": "i like to go to the small house",
}


def host(*cmd: str) -> None:
    if shutil.which(cmd[0]) is None:
        pytest.fail(f"{cmd[0]} is not installed on this host (scripts/ci-setup.sh installs it)", pytrace=False)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr[-2000:]}"


def mediaconduit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MEDIACONDUIT), *args], capture_output=True, text=True, timeout=900, env=os.environ)


def heard(sentence: str, text: str) -> int:
    words = text.lower().split()
    return sum(w in words for w in sentence.split())


@pytest.fixture(scope="module")
def worker(provider_urls):
    w = WorkerProcess(["audio-to-text", "video-to-audio"], concurrency=2).wait_ready()
    yield w
    w.stop()


def test_five_recordings_through_whisper_come_back_as_transcripts(worker, provider_urls, tmp_path):
    folder = tmp_path / "interviews"
    folder.mkdir()
    for name, sentence in SENTENCES.items():
        host("espeak-ng", *SPEECH, "-w", str(folder / f"{name}.wav"), sentence)
    out, saved = tmp_path / "results.jsonl", tmp_path / "transcripts"
    proc = mediaconduit("batch", "--files", str(folder), "--provider", provider_urls["whisper"], "--model", "whisper-stt",
                        "--options", '{"language": "en"}', "--out", str(out), "--save-outputs", str(saved), "--sidecar")
    assert proc.returncode == 0, proc.stderr
    assert "sent 5, succeeded 5, failed 0" in proc.stderr
    for name, sentence in SENTENCES.items():
        text = (saved / f"{name}.txt").read_text()
        assert heard(sentence, text) >= len(sentence.split()) / 2, (name, text)
        record = json.loads((saved / f"{name}.txt.json").read_text())
        assert record["asset"]["content"] == text and record["metadata"]["generation_prompt"]["model_id"] == "whisper-stt"


def test_two_videos_through_extract_audio_then_whisper(worker, provider_urls, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i, name in enumerate(("talk1", "talk2"), start=1):
        speech = tmp_path / f"{name}.wav"
        host("espeak-ng", *SPEECH, "-w", str(speech), SENTENCES[name])
        host("ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10",
             "-i", str(speech), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(folder / f"clip{i}.mp4"))
    out, saved = tmp_path / "results.jsonl", tmp_path / "transcripts"
    args = ["batch", "--files", str(folder), "--provider", provider_urls["ffmpeg"], "--model", "extract-audio",
            "--options", '{"format": "wav", "sample_rate": 16000, "channels": 1}',
            "--then", provider_urls["whisper"], "whisper-stt", "--out", str(out), "--save-outputs", str(saved)]
    proc = mediaconduit(*args)
    assert proc.returncode == 0, proc.stderr
    assert "via video-to-audio | audio-to-text" in proc.stderr and "sent 2, succeeded 2" in proc.stderr
    for i, name in enumerate(("talk1", "talk2"), start=1):
        text = (saved / f"clip{i}.txt").read_text()
        assert heard(SENTENCES[name], text) >= len(SENTENCES[name].split()) / 2, (name, text)
        record = next(r for r in map(json.loads, out.read_text().splitlines()) if r["keys"] == [{"file": f"clip{i}.mp4"}])
        step = record["result"]["metadata"]["generation_prompt"]["input"]["metadata"]["generation_prompt"]
        assert step["model_id"] == "extract-audio" and step["input"]["type"] == "video"
    again = mediaconduit(*args)
    assert again.returncode == 0 and "stored 0.0 MB (0 new files, 2 already in the blob store, 0 not media); sent 0," \
        in again.stderr, again.stderr
