"""The command line as a user meets it (a real ``mediaconduit`` process): a result as JSON; a bad provider,
model or argument, or a failed job, as one ``error: …`` line and a non-zero exit code; ``--debug`` shows
the traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")  # the installed console script


def mediaconduit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MEDIACONDUIT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_job_prints_its_result(text_worker, echo_url):
    proc = mediaconduit("submit", "hello", "--provider", echo_url, "--model", "upper")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["asset"]["content"] == "HELLO"


def test_a_missing_folder(tmp_path):
    line = one_error_line(mediaconduit("submit", "hi", "--provider", str(tmp_path / "nope"), "--model", "upper"))
    assert line.startswith(f"error: provider folder '{tmp_path / 'nope'}' does not exist on host ")


def test_a_missing_repository():
    url = "https://github.com/MediaConduit/no-such-repository"
    line = one_error_line(mediaconduit("submit", "hi", "--provider", url, "--model", "upper"))
    assert line.startswith(f"error: cannot fetch {url!r}: git fetch: ")
    assert line.endswith("no-such-repository' does not appear to be a git repository"), line


def test_an_unknown_model(echo_url):
    line = one_error_line(mediaconduit("submit", "hi", "--provider", echo_url, "--model", "nope"))
    assert line == "error: provider 'echo-provider' has no model 'nope' (models: echo, upper, reverse)"


def test_a_job_that_fails_in_the_worker(text_worker, make_provider):
    from conftest import REPO

    echo = (REPO / "providers" / "echo-provider" / "src" / "echo_provider" / "__init__.py").read_text()
    manifest = {"id": "boom", "name": "Boom", "capabilities": ["text-to-text"], "main": "provider.py",
                "models": [{"id": "echo", "capabilities": ["text-to-text"]}], "exportName": "EchoProvider"}
    url = make_provider("boom", manifest, {"provider.py": echo.replace(
        "started = time.perf_counter()", "raise RuntimeError('boom from the provider')")})
    line = one_error_line(mediaconduit("submit", "hi", "--provider", url, "--model", "echo"))
    assert line.startswith("error: job ") and line.endswith(
        f"failed on worker {text_worker.hostname}: provider 'boom' model 'echo' raised RuntimeError: boom from the provider")


@pytest.mark.parametrize("args, expected", [
    (["submit", "hi", "--model", "upper"], "error: Missing option '--provider'. (see 'mediaconduit submit --help')"),
    (["submit", "hi", "--provider", "x", "--model", "m", "-o", "novalue"],
     "error: Invalid value for --option: 'novalue' is not key=value (see 'mediaconduit submit --help')"),
    (["worker", "--capability", "text-to-smell"], "error: Invalid value for --capability: unknown capability 'text-to-smell'"),
    (["no-such-command"], "error: No such command 'no-such-command'. (see 'mediaconduit --help')"),
    (["--no-such-option"], "error: No such option '--no-such-option'. (see 'mediaconduit --help')"),
])
def test_a_bad_argument(args, expected):
    proc = mediaconduit(*args)
    assert proc.returncode == 2
    assert one_error_line(proc).startswith(expected)


def test_other_commands_fail_alike(tmp_path):
    line = one_error_line(mediaconduit("providers", "show", f"git+file://{tmp_path}/nope.git"))
    assert line.endswith("does not appear to be a git repository")
    assert one_error_line(mediaconduit("providers", "update", "ftp://x/y")) == (
        "error: unsupported provider URL scheme in 'ftp://x/y'")


def test_a_broker_that_does_not_answer(echo_url):
    from conftest import free_port

    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    proc = mediaconduit("submit", "hi", "--provider", echo_url, "--model", "upper",
                        env={"MEDIACONDUIT_BROKER_URL": url, "MEDIACONDUIT_RESULT_BACKEND": url})
    line = one_error_line(proc)
    assert line.startswith("error: cannot reach the broker redis://[REDACTED]@127.0.0.1:"), line
    assert "Connection refused" in line and "hunter2" not in line


def test_debug_shows_the_traceback(tmp_path):
    proc = mediaconduit("--debug", "submit", "hi", "--provider", str(tmp_path / "nope"), "--model", "upper")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("mediaconduit_worker.errors.ProviderSourceError: ")


def test_no_arguments_still_prints_the_help():
    proc = mediaconduit()
    assert "Usage: " in proc.stdout + proc.stderr and "submit" in proc.stdout + proc.stderr


@pytest.mark.parametrize("command", ["batch", "worker", "cache"])
def test_a_commands_help_is_help_not_an_error(command):
    proc = mediaconduit(command, "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"Usage: mediaconduit {command}")
