"""The README's first steps run as written, in order, on a fresh ``MEDIACONDUIT_HOME`` with the embedded
default broker stopped (as ``make run`` leaves it): the shell block that starts a broker and a worker, the
Python snippet, the same job from the shell, and the block that sends it through the HTTP gateway; and its
"Folder batches" blocks, in order. The snippets are
read from README.md, not copied here."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, free_port

README = (REPO / "README.md").read_text()
VENV_BIN = REPO / ".venv" / "bin"
MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")  # the installed console script


def first_steps() -> tuple[str, str, str, str]:
    """The shell block that starts the broker, the Python block after it, the inline submit after that, and
    the shell block that starts the gateway and sends it the job."""
    start = re.search(r"```sh\n((?:(?!```).)*mediaconduit broker start(?:(?!```).)*)```", README, re.S)
    assert start, "README.md has no ```sh block with `mediaconduit broker start`"
    rest = README[start.end():]
    python = re.search(r"```python\n(.*?)```", rest, re.S)
    assert python, "README.md has no ```python block after the one starting the broker"
    submit = re.search(r"`(\.venv/bin/mediaconduit submit [^`]+)`", rest[python.end():])
    assert submit, "README.md shows no shell form of the snippet's job after it"
    gateway = re.search(r"```sh\n((?:(?!```).)*mediaconduit gateway &(?:(?!```).)*)```", rest[python.end():], re.S)
    assert gateway, "README.md has no ```sh block starting the gateway after the first steps"
    return start.group(1), python.group(1), submit.group(1), gateway.group(1)


@pytest.fixture
def fresh_home(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MEDIACONDUIT_BROKER_URL", "MEDIACONDUIT_RESULT_BACKEND")}
    return {**env, "MEDIACONDUIT_HOME": str(tmp_path / "home"), "MEDIACONDUIT_EMBEDDED_PORT": str(free_port())}


def test_the_readme_first_steps_run_as_written(fresh_home, tmp_path):
    if not (VENV_BIN / "mediaconduit").exists():
        pytest.skip(f"the README's commands use {VENV_BIN}, which `make venv` creates; it is missing")
    shell, python, submit, gateway = first_steps()
    log = tmp_path / "shell.log"
    started = subprocess.Popen(["bash", "-ec", shell], cwd=REPO, env=fresh_home, stdout=open(log, "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)  # its `&` worker stays in this group
    try:
        assert started.wait(60) == 0, log.read_text()
        snippet = subprocess.run([str(VENV_BIN / "python"), "-c", python], cwd=REPO, env=fresh_home,
                                 capture_output=True, text=True, timeout=240)
        assert snippet.returncode == 0, snippet.stderr + log.read_text()[-3000:]
        assert "'content': 'Hello'" in snippet.stdout and "'generation_prompt'" in snippet.stdout, snippet.stdout
        shell_job = subprocess.run(["bash", "-ec", submit], cwd=REPO, env=fresh_home, capture_output=True, text=True,
                                   timeout=240)
        assert shell_job.returncode == 0, shell_job.stderr
        assert json.loads(shell_job.stdout)["asset"]["content"] == "Hello"
        # the HTTP block, in a shell of its own whose `&` gateway is stopped with it
        http = subprocess.Popen(["bash", "-ec", gateway + "\nkill %1\n"], cwd=REPO, env=fresh_home,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = http.communicate(timeout=120)
        finally:
            if http.poll() is None:
                os.killpg(http.pid, signal.SIGTERM)
        assert http.returncode == 0, err
        replies = [line for line in out.splitlines() if line.startswith('{"id"')]  # beside uvicorn's access log
        assert len(replies) == 1, out
        job = json.loads(replies[0])
        assert job["status"] == "succeeded" and job["result"]["asset"]["content"] == "HELLO", job
    finally:
        os.killpg(started.pid, signal.SIGTERM)
        subprocess.run([str(VENV_BIN / "mediaconduit"), "broker", "stop"], env=fresh_home, capture_output=True, timeout=60)


def folder_batch_blocks() -> list[str]:
    """The shell blocks of the README's "Folder batches" section, in order."""
    section = re.search(r"^## Folder batches.*?(?=^## )", README, re.S | re.M)
    assert section, "README.md has no '## Folder batches' section"
    blocks = re.findall(r"```sh\n(.*?)```", section.group(0), re.S)
    assert len(blocks) == 2, blocks
    return blocks


@pytest.mark.docker
def test_the_readme_folder_batch_runs_as_written(docker_engine, redis_server, tmp_path):
    """Both blocks, in order, in a folder laid out as the repository root (its .venv, providers/ and services/),
    on the session's broker: recordings made by espeak-ng, transcribed by Whisper in its container, written back as
    files; then a blob and a result fetched one at a time."""
    if not (VENV_BIN / "mediaconduit").exists():
        pytest.skip(f"the README's commands use {VENV_BIN}, which `make venv` creates; it is missing")
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed on this host (scripts/ci-setup.sh installs it)", pytrace=False)
    root = tmp_path / "root"
    root.mkdir()
    for name in (".venv", "providers", "services"):
        (root / name).symlink_to(REPO / name)
    batch, one_at_a_time = folder_batch_blocks()
    log = tmp_path / "shell.log"
    started = subprocess.Popen(["bash", "-ec", batch], cwd=root, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)  # its `&` worker stays in this group
    try:
        assert started.wait(900) == 0, log.read_text()[-4000:]
        words = (root / "transcripts" / "talk1.txt").read_text().lower().split()
        said = "my name is john and i live in a small house near the river".split()
        assert sum(w in words for w in said) >= len(said) // 2, (words, log.read_text()[-2000:])
        assert log.read_text().rstrip().endswith((root / "transcripts" / "talk1.txt").read_text().rstrip())  # `cat`
        record = json.loads((root / "transcripts" / "talk1.txt.json").read_text())
        assert record["asset"]["content"] == (root / "transcripts" / "talk1.txt").read_text()
        proc = subprocess.run(["bash", "-ec", one_at_a_time], cwd=root, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert (root / "talk2-copy.wav").read_bytes() == (root / "talks" / "talk2.wav").read_bytes()
        first = json.loads((root / "results.jsonl").read_text().splitlines()[0])
        name = Path(first["keys"][0]["file"]).with_suffix(".txt")
        assert (root / "again.txt").read_text() == (root / "transcripts" / name).read_text()
    finally:
        os.killpg(started.pid, signal.SIGTERM)


def test_a_relative_provider_path_is_the_commands_folder_not_the_workers(text_worker, tmp_path):
    """The worker runs elsewhere (here: another working directory), so a relative folder is made absolute
    by the command that was given it."""
    shutil.copytree(REPO / "providers" / "echo-provider", tmp_path / "mine")
    proc = subprocess.run([str(MEDIACONDUIT), "submit", "hi", "--provider", "mine", "--model", "upper"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["metadata"]["generation_prompt"]["provider_url"] == str(tmp_path / "mine")


def test_the_scaffold_hint_names_the_folder_absolutely(tmp_path):
    proc = subprocess.run([str(MEDIACONDUIT), "providers", "new", "hint", "--dir", "."], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"next: mediaconduit providers validate {tmp_path / 'hint-provider'}"
