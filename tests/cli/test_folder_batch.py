"""``mediaconduit batch --files`` as a user runs it: a real ``mediaconduit`` process, real files in a folder,
a local audio provider run by a real worker (tests/support/media_provider.py), the session's Redis.

One item per file, typed by its bytes; outputs back as files named after their inputs; a file that is
not media fails alone with exit code 1; a re-run stores and sends nothing; Ctrl-C, then the same
command, ends with every job run once. The Docker-backed media engines (espeak, ffmpeg, whisper) are in
test_folder_batch_media.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import media_provider
from support.media_provider import reversed_wav

sound_url, sound_worker = media_provider.sound_url, media_provider.sound_worker  # the shared fixtures

MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")


def mediaconduit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MEDIACONDUIT), *args], capture_output=True, text=True, timeout=300, env=os.environ)


def clean(stderr: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def tone(path: Path, hz: int, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                           f"sine=frequency={hz}:duration={seconds},afade=t=in:d={seconds}", "-ac", "1", "-ar", "16000",
                           "-f", "wav", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return path


def described(path: Path) -> str:
    data = path.read_bytes()
    return f"audio/wav {len(data)} {hashlib.sha256(data).hexdigest()}"



@pytest.fixture
def talks(tmp_path) -> Path:
    """talk1.wav, talk2.wav, sub/talk3.wav, a WAV named clip.mp4, notes.txt (not media) and a hidden file."""
    folder = tmp_path / "talks"
    for i, hz in enumerate((220, 330), start=1):
        tone(folder / f"talk{i}.wav", hz)
    tone(folder / "sub" / "talk3.wav", 440)
    tone(folder / "clip.mp4", 550)
    (folder / "notes.txt").write_text("meeting notes, not a recording\n" * 10)
    (folder / ".DS_Store").write_bytes(b"\x00\x01hidden")
    return folder


def stored_inodes() -> dict[Path, int]:
    from mediaconduit_worker.blobs import BlobStore

    return {p: p.stat().st_ino for p in (BlobStore().root / "sha256").rglob("*") if p.is_file()}


def test_a_folder_runs_one_item_per_file_and_saves_outputs_named_after_them(sound_worker, sound_url, talks, tmp_path):
    out, saved = tmp_path / "results.jsonl", tmp_path / "transcripts"
    args = ["batch", "--files", str(talks), "--provider", sound_url, "--model", "describe", "--out", str(out),
            "--save-outputs", str(saved), "--sidecar"]
    proc = mediaconduit(*args)
    clean(proc.stderr)
    assert proc.returncode == 1, proc.stderr  # notes.txt failed
    assert proc.stderr.splitlines()[-1] == f"error: 1 of 5 jobs failed (see above and {out})"
    assert f"{talks / 'notes.txt'}: not audio, an image or a video" in proc.stderr
    assert "files 5/5, written 0.1 MB" in proc.stderr  # the bytes bar
    assert "done 4  failed 1  running 0  queued 0" in proc.stderr  # the items bar
    assert "stored 0.1 MB (4 new files, 0 already in the blob store, 1 not media); sent 4, succeeded 4, failed 1" in proc.stderr

    inputs = {"talk1.wav": "talk1.txt", "talk2.wav": "talk2.txt", "sub/talk3.wav": "sub/talk3.txt", "clip.mp4": "clip.txt"}
    for source, name in inputs.items():
        assert (saved / name).read_text() == described(talks / source), name  # a WAV named .mp4 went as audio/wav
        record = json.loads((saved / (name + ".json")).read_text())
        assert record["asset"]["content"] == described(talks / source)
        assert record["metadata"]["generation_prompt"]["input"]["sha256"] == hashlib.sha256(
            (talks / source).read_bytes()).hexdigest()
    assert sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()) == sorted(
        [*inputs.values(), *(n + ".json" for n in inputs.values())])
    records = {r["keys"][0]["file"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == sorted([*inputs, "notes.txt"])
    assert records["notes.txt"]["status"] == "FAILURE" and "not audio" in records["notes.txt"]["error"]

    before = stored_inodes()
    for p in saved.rglob("*.txt"):
        p.unlink()  # outputs lost since: a re-run writes them again from --out, sends nothing
    again = mediaconduit(*args)
    clean(again.stderr)
    assert again.returncode == 1
    assert again.stderr.splitlines()[-1] == (f"error: 1 of 5 jobs failed (1 in an earlier run; --retry-failed sends them "
                                             f"again) (see above and {out})")
    assert "stored 0.0 MB (0 new files, 4 already in the blob store, 1 not media); sent 0, succeeded 0, failed 0, skipped " \
           "(already in results.jsonl) 5" in again.stderr
    assert stored_inodes() == before  # nothing written to the store again
    assert (saved / "sub" / "talk3.txt").read_text() == described(talks / "sub" / "talk3.wav")


def test_item_ids_follow_from_content_and_steps(sound_worker, sound_url, talks, tmp_path):
    """The same bytes under another name are the same job; other steps are another job."""
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "renamed.wav").write_bytes((talks / "talk1.wav").read_bytes())
    first = tmp_path / "first.jsonl"
    assert mediaconduit("batch", "--files", str(talks / "talk1.wav"), "--provider", sound_url, "--model", "describe",
                        "--out", str(first)).returncode == 0
    second = tmp_path / "second.jsonl"
    proc = mediaconduit("batch", "--files", str(copy), "--provider", sound_url, "--model", "describe",
                        "--out", str(second))
    assert proc.returncode == 0, proc.stderr
    assert "sent 0," in proc.stderr  # its result was in the backend already
    (a,), (b,) = (list(map(json.loads, f.read_text().splitlines())) for f in (first, second))
    assert a["id"] == b["id"] and b["keys"] == [{"file": "renamed.wav"}]
    third = tmp_path / "third.jsonl"
    proc = mediaconduit("batch", "--files", str(copy), "--provider", sound_url, "--model", "describe",
                        "--options", '{"sleep": 0.01}', "--out", str(third))
    assert proc.returncode == 0 and "sent 1," in proc.stderr
    assert json.loads(third.read_text())["id"] != a["id"]


def test_a_glob_and_a_two_step_batch_write_media_and_text_outputs(sound_worker, sound_url, talks, tmp_path):
    saved = tmp_path / "backwards"
    proc = mediaconduit("batch", "--files", f"{talks}/*.wav", "--provider", sound_url, "--model", "reverse",
                        "--out", str(tmp_path / "r.jsonl"), "--save-outputs", str(saved))
    clean(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in saved.iterdir()) == ["talk1.wav", "talk2.wav"]  # the glob: no sub/, no clip.mp4
    for name in ("talk1.wav", "talk2.wav"):
        assert (saved / name).read_bytes() == reversed_wav((talks / name).read_bytes())
    described_dir = tmp_path / "described"
    proc = mediaconduit("batch", "--files", f"{talks}/**/*.wav", "--provider", sound_url, "--model", "reverse",
                        "--then", sound_url, "describe", "--out", str(tmp_path / "d.jsonl"),
                        "--save-outputs", str(described_dir))
    assert proc.returncode == 0, proc.stderr
    assert "via audio-to-audio | audio-to-text" in proc.stderr
    for name in ("talk1", "talk2", "sub/talk3"):
        back = reversed_wav((talks / f"{name}.wav").read_bytes())
        assert (described_dir / f"{name}.txt").read_text() == f"audio/wav {len(back)} {hashlib.sha256(back).hexdigest()}"


def test_inputs_sharing_a_name_keep_their_whole_names(sound_worker, sound_url, tmp_path):
    folder = tmp_path / "same"
    tone(folder / "a.wav", 300)
    tone(folder / "a.mp3.wav", 310)
    (folder / "a.bin").write_bytes(tone(tmp_path / "x.wav", 320).read_bytes())
    saved = tmp_path / "out"
    proc = mediaconduit("batch", "--files", str(folder), "--provider", sound_url, "--model", "describe",
                        "--out", str(tmp_path / "o.jsonl"), "--save-outputs", str(saved))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in saved.iterdir()) == ["a.bin.txt", "a.mp3.txt", "a.wav.txt"]
    assert (saved / "a.bin.txt").read_text() == described(folder / "a.bin")


def test_ctrl_c_mid_run_then_the_same_command_runs_every_job_once(sound_worker, sound_url, tmp_path):
    folder = tmp_path / "many"
    files = [tone(folder / f"t{i}.wav", 200 + 20 * i) for i in range(6)]
    log = tmp_path / "executions.log"
    out = tmp_path / "results.jsonl"
    args = ["batch", "--files", str(folder), "--provider", sound_url, "--model", "describe", "--options",
            json.dumps({"sleep": 2.5, "log": str(log)}), "--out", str(out)]
    proc = subprocess.Popen([str(MEDIACONDUIT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1].startswith("error: interrupted; the batch's jobs keep running; the same command "
                                              "again resumes"), stderr
    clean(stderr)
    resumed = mediaconduit(*args)
    clean(resumed.stderr)
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["keys"][0]["file"] for r in records) == [f"t{i}.wav" for i in range(6)]
    assert all(r["status"] == "SUCCESS" for r in records)
    digests = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    assert sorted(log.read_text().split()) == digests  # each ran once: none lost, none repeated


def test_bad_uses_are_one_line(tmp_path, sound_url, talks):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('"x"\n')
    cases = [
        (["batch", str(jsonl), "--files", str(talks)], 2, "give INPUT.jsonl or --files GLOB|DIR (one of them)"),
        (["batch"], 2, "give INPUT.jsonl or --files GLOB|DIR (one of them)"),
        (["batch", "--files", str(talks), "--sidecar"], 2, "--sidecar writes beside the outputs of --save-outputs DIR"),
        (["batch", "--files", str(tmp_path / "none-*.wav")], 1, f"--files '{tmp_path}/none-*.wav': no file matches"),
    ]
    for args, code, text in cases:
        proc = mediaconduit(*args, "--provider", sound_url, "--model", "describe", "--out", str(tmp_path / "o.jsonl"))
        lines = proc.stderr.splitlines()
        assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (
            args, proc.returncode, proc.stderr)


def jsonl(path: Path, *lines: object) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_jsonl_lines_name_files_with_allow_files(sound_worker, sound_url, talks, tmp_path):
    """{"file": PATH} lines, relative to the JSONL file's folder: stored as --files stores them (typed by their
    bytes, the same job as --files makes of them), outputs named after them; a file that is not media fails alone."""
    batch_file = jsonl(talks / "batch.jsonl", {"file": "talk1.wav"}, {"file": "sub/../sub/talk3.wav", "id": "three"},
                       {"file": "clip.mp4", "options": {"sleep": 0.01}}, {"file": "notes.txt"})
    out, saved, log = tmp_path / "results.jsonl", tmp_path / "saved", tmp_path / "ran.log"
    options = json.dumps({"log": str(log)})  # jobs of this test alone (their options differ from other tests')
    proc = mediaconduit("batch", str(batch_file), "--allow-files", "--provider", sound_url, "--model", "describe",
                        "--options", options, "--out", str(out), "--save-outputs", str(saved))
    clean(proc.stderr)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1] == f"error: 1 of 4 jobs failed, 0 of 4 lines were skipped (see above and {out})"
    assert "files 4/4, written" in proc.stderr and "1 not media); sent 3, succeeded 3, failed 1" in proc.stderr
    records = {r["keys"][0]["line"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert [records[n]["keys"] for n in (1, 2, 3, 4)] == [
        [{"line": 1, "file": "talk1.wav"}], [{"line": 2, "id": "three", "file": "sub/talk3.wav"}],
        [{"line": 3, "file": "clip.mp4"}], [{"line": 4, "file": "notes.txt"}]]
    assert records[4]["status"] == "FAILURE" and f"{talks / 'notes.txt'}: not audio" in records[4]["error"]
    for name, source in (("talk1.txt", "talk1.wav"), ("sub/talk3.txt", "sub/talk3.wav"), ("clip.txt", "clip.mp4")):
        assert (saved / name).read_text() == described(talks / source), name  # clip.mp4 went as audio/wav
    assert records[3]["result"]["metadata"]["generation_prompt"]["options"]["sleep"] == 0.01  # the line's options
    assert sorted(log.read_text().split()) == sorted(hashlib.sha256((talks / f).read_bytes()).hexdigest()
                                                     for f in ("talk1.wav", "sub/talk3.wav", "clip.mp4"))

    folder_run = tmp_path / "folder.jsonl"
    again = mediaconduit("batch", "--files", str(talks / "talk1.wav"), "--provider", sound_url, "--model", "describe",
                         "--options", options, "--out", str(folder_run))
    assert again.returncode == 0 and "sent 0," in again.stderr, again.stderr  # the same job: content and steps
    assert json.loads(folder_run.read_text())["id"] == records[1]["id"]


def test_without_allow_files_a_line_naming_a_file_fails_alone_naming_the_flag(sound_worker, sound_url, talks, tmp_path):
    asset = json.loads(mediaconduit("blobs", "put", "--json", str(talks / "talk2.wav")).stdout)
    batch_file = jsonl(talks / "batch.jsonl", {"file": "talk1.wav"}, {"input": asset, "id": "two"})
    out = tmp_path / "results.jsonl"
    proc = mediaconduit("batch", str(batch_file), "--provider", sound_url, "--model", "describe", "--out", str(out))
    clean(proc.stderr)
    assert proc.returncode == 1, proc.stderr
    assert (f"{batch_file} line 1: names the local file 'talk1.wav': JSONL lines may name files only with --allow-files "
            "(skipped)") in proc.stderr
    assert proc.stderr.splitlines()[-1] == f"error: 0 of 1 jobs failed, 1 of 2 lines were skipped (see above and {out})"
    (record,) = map(json.loads, out.read_text().splitlines())  # the rest of the batch ran
    assert record["keys"] == [{"line": 2, "id": "two"}] and record["result"]["asset"]["content"] == described(
        talks / "talk2.wav")


def test_allow_files_refuses_what_resolves_outside_the_jsonl_folder(sound_worker, sound_url, talks, tmp_path):
    """``..``, a symlink pointing out and an absolute path are refused, each alone and before anything is read; a
    symlink staying inside the folder is followed."""
    from mediaconduit_worker.blobs import BlobStore

    outside = tone(tmp_path / "secret.wav", 777, seconds=0.37)
    (talks / "out-link.wav").symlink_to(outside)
    (talks / "in-link.wav").symlink_to(talks / "talk2.wav")
    batch_file = jsonl(talks / "batch.jsonl", {"file": "../secret.wav"}, {"file": "out-link.wav"},
                       {"file": str(outside)}, {"file": str(talks / "talk1.wav")}, {"file": "in-link.wav"})
    out = tmp_path / "results.jsonl"
    proc = mediaconduit("batch", str(batch_file), "--allow-files", "--provider", sound_url, "--model", "describe",
                        "--out", str(out))
    clean(proc.stderr)
    assert proc.returncode == 1, proc.stderr
    root = talks.resolve()
    for line in (f"line 1: file '../secret.wav' resolves to {outside.resolve()}, outside the JSONL file's folder {root}: "
                 "refused (skipped)",
                 f"line 2: file 'out-link.wav' resolves to {outside.resolve()}, outside the JSONL file's folder {root}: "
                 "refused (skipped)",
                 f"line 3: file '{outside}' is an absolute path: name files relative to the JSONL file's folder",
                 f"line 4: file '{talks / 'talk1.wav'}' is an absolute path"):
        assert line in proc.stderr, (line, proc.stderr)
    assert proc.stderr.splitlines()[-1] == f"error: 0 of 1 jobs failed, 4 of 5 lines were skipped (see above and {out})"
    (record,) = map(json.loads, out.read_text().splitlines())
    assert record["keys"] == [{"line": 5, "file": "in-link.wav"}]
    assert record["result"]["asset"]["content"] == described(talks / "talk2.wav")
    assert not BlobStore().has(hashlib.sha256(outside.read_bytes()).hexdigest())  # nothing outside was read


def test_allow_files_without_a_jsonl_file_is_a_usage_error(sound_url, talks, tmp_path):
    proc = mediaconduit("batch", "--files", str(talks), "--allow-files", "--provider", sound_url, "--model", "describe",
                        "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "--allow-files lets INPUT.jsonl lines name files; --files names them itself" in \
        proc.stderr, proc.stderr
