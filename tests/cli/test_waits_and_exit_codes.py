"""Waiting, exit codes and Ctrl-C as a user meets them (a real ``mediaconduit`` process, a real Redis, real
workers, and none where the case is "no worker"): a command that would wait on nobody says so at once,
before anything is sent; a timeout or a failure is one line with nothing after it; a batch with failed
items or skipped lines exits 1; Ctrl-C exits 130 saying the jobs keep running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")
SLOW = '''
import pathlib
import time

from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text


class SlowModel(TextToTextModel):
    """Touches the file named by options.marker once it runs, then sleeps options.sleep seconds."""

    def transform(self, input, options=None):
        started = time.perf_counter()
        opts = options or {}
        if opts.get("marker"):
            pathlib.Path(opts["marker"]).touch()
        time.sleep(float(opts.get("sleep", 0)))
        if opts.get("fail"):
            raise RuntimeError("failed on purpose")
        return Text.from_string(input_text(input), metadata={"generation_prompt": self.generation_prompt(input, opts, started)})


class SlowProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: SlowModel}
'''
SLOW_MANIFEST = {"id": "slow", "name": "Slow", "capabilities": ["text-to-text"], "main": "provider.py",
                 "exportName": "SlowProvider", "models": [{"id": "slow", "capabilities": ["text-to-text"]}]}


def mediaconduit(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MEDIACONDUIT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([str(MEDIACONDUIT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def clean_stderr(stderr: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    clean_stderr(proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def no_worker(redis_server) -> dict[str, str]:
    """The environment of a broker database no worker consumes (the session's workers use database 0)."""
    parts = urlsplit(os.environ["MEDIACONDUIT_BROKER_URL"])
    url = urlunsplit(parts._replace(path="/13"))
    redis.Redis.from_url(url).flushdb()
    return {"MEDIACONDUIT_BROKER_URL": url, "MEDIACONDUIT_RESULT_BACKEND": url}


@pytest.fixture
def slow_url(make_provider) -> str:
    return make_provider("slow", SLOW_MANIFEST, {"provider.py": SLOW})


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not created within {timeout}s"
        time.sleep(0.1)


def test_submit_with_no_worker_says_so_before_sending(no_worker, echo_url):
    proc = mediaconduit("submit", "hi", "--provider", echo_url, "--model", "upper", env=no_worker)
    assert proc.returncode == 1
    assert one_error_line(proc) == ("error: no worker serves queue 'text-to-text'; start one with "
                                    "`mediaconduit worker --capability text-to-text` (nothing was sent)")
    assert redis.Redis.from_url(no_worker["MEDIACONDUIT_BROKER_URL"]).llen("text-to-text") == 0


def test_batch_with_no_worker_says_so_before_sending(no_worker, echo_url, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('"a"\n"b"\n"c"\n')
    proc = mediaconduit("batch", str(src), "--provider", echo_url, "--model", "upper", "--out",
                        str(tmp_path / "out.jsonl"), env=no_worker)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == ("error: no worker serves queue 'text-to-text'; start one with "
                                            "`mediaconduit worker --capability text-to-text` (nothing was sent)")
    clean_stderr(proc.stderr)
    assert redis.Redis.from_url(no_worker["MEDIACONDUIT_BROKER_URL"]).llen("text-to-text") == 0


def test_replay_with_no_worker_says_so_before_sending(text_worker, no_worker, echo_url, tmp_path):
    made = mediaconduit("submit", "hi", "--provider", echo_url, "--model", "upper")
    assert made.returncode == 0, made.stderr
    result = tmp_path / "RESULT.json"
    result.write_text(made.stdout)
    proc = mediaconduit("replay", str(result), "--verify", "--yes", env=no_worker)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == ("error: no worker serves queue 'text-to-text'; start one with "
                                            "`mediaconduit worker --capability text-to-text` (nothing was sent)")
    clean_stderr(proc.stderr)


@pytest.mark.parametrize("command, default", [("submit", "[default: 120.0]"), ("replay", "[default: 600.0]"),
                                              ("batch", "[default: wait until every item ends]"),
                                              ("status", "[default: 2.0]")])
def test_the_default_wait_is_in_the_help(command, default):
    proc = mediaconduit(command, "--help")
    assert proc.returncode == 0
    assert default in " ".join(proc.stdout.split()), proc.stdout


def test_a_timeout_is_one_line_with_nothing_after_it(text_worker, slow_url):
    proc = mediaconduit("submit", "hi", "--provider", slow_url, "--model", "slow", "-o", "sleep=8", "--timeout", "1")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line.startswith("error: job ") and "has no result after 1s (--timeout); it stays queued or running" in line


def test_a_job_that_fails_on_the_worker_says_where(text_worker, slow_url):
    proc = mediaconduit("submit", "hi", "--provider", slow_url, "--model", "slow", "-o", "fail=true")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert f"failed on worker {text_worker.hostname}: provider 'slow' model 'slow' raised RuntimeError: " \
           "failed on purpose" in line, line


def test_ctrl_c_while_submit_waits_exits_130_and_the_job_goes_on(text_worker, slow_url, tmp_path):
    from mediaconduit_worker.celery_app import app

    marker = tmp_path / "started"
    proc = start("submit", "hi", "--provider", slow_url, "--model", "slow", "-o", f"marker={marker}", "-o", "sleep=3")
    wait_for(marker)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    clean_stderr(err)
    (line,) = err.splitlines()
    assert line.startswith("error: interrupted; job ") and line.endswith("keeps running on queue 'text-to-text'")
    job_id = line.split()[3]
    assert app.AsyncResult(job_id).get(timeout=60)["asset"]["content"] == "hi"


def test_ctrl_c_in_a_batch_exits_130_and_a_rerun_resumes(text_worker, slow_url, tmp_path):
    marker = tmp_path / "started"
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"input": "one", "options": {"marker": str(marker), "sleep": 3}}) + "\n"
                   + json.dumps({"input": "two", "options": {"sleep": 3}}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["batch", str(src), "--provider", slow_url, "--model", "slow", "--out", str(out)]
    proc = start(*args)
    wait_for(marker)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    clean_stderr(err)
    assert "Aborted!" not in err
    assert err.splitlines()[-1] == ("error: interrupted; the batch's jobs keep running; the same command again "
                                    f"resumes (results so far in {out})")
    again = mediaconduit(*args)
    assert again.returncode == 0, again.stderr
    assert "sent 0," in again.stderr  # both jobs were waited for, not sent again
    assert sorted(json.loads(line)["result"]["asset"]["content"] for line in out.read_text().splitlines()) == ["one", "two"]


def test_a_batch_with_a_failed_item_exits_1_with_the_count(text_worker, slow_url, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('"ok"\n' + json.dumps({"input": "bad", "options": {"fail": True}}) + "\n")
    proc = mediaconduit("batch", str(src), "--provider", slow_url, "--model", "slow", "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 1
    clean_stderr(proc.stderr)
    assert proc.stderr.splitlines()[-1] == (f"error: 1 of 2 jobs failed, 0 of 2 lines were skipped (see above and "
                                            f"{tmp_path / 'o.jsonl'})")


def test_a_batch_with_a_skipped_line_exits_1_and_a_clean_one_0(text_worker, echo_url, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('"ok"\n{not json\n')
    out = tmp_path / "o.jsonl"
    proc = mediaconduit("batch", str(src), "--provider", echo_url, "--model", "upper", "--out", str(out))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == f"error: 0 of 1 jobs failed, 1 of 2 lines were skipped (see above and {out})"
    src.write_text('"ok"\n')
    clean = mediaconduit("batch", str(src), "--provider", echo_url, "--model", "upper", "--out", str(out))
    assert clean.returncode == 0, clean.stderr


def test_status_with_no_worker_exits_1_in_json_too(no_worker):
    for args in (["status", "--json"], ["status"]):
        proc = mediaconduit(*args, "--timeout", "1", env=no_worker)
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == ["error: no worker answered within 1s; start one with "
                                            "`mediaconduit worker --capability text-to-text`"]
        assert proc.stdout.strip() == ("[]" if "--json" in args else "")


def test_status_reports_queues_pool_and_slots_from_its_one_broadcast(text_worker):
    proc = mediaconduit("status", "--json")
    assert proc.returncode == 0, proc.stderr
    (me,) = [w for w in json.loads(proc.stdout) if w["worker"] == text_worker.hostname]
    assert me["queues"] == ["mediaconduit", "text-to-text"] and me["pool"] == "prefork" and me["concurrency"] == 2
    assert me["active"] == 0 and "containers" in me["services"]


def test_piped_tables_are_not_cut_at_80_columns(text_worker, make_provider):
    from conftest import REPO

    long_id = "a-provider-whose-id-is-much-longer-than-a-table-cell-of-an-eighty-column-terminal"
    echo = (REPO / "providers" / "echo-provider" / "src" / "echo_provider" / "__init__.py").read_text()
    manifest = {"id": long_id, "name": "Long", "capabilities": ["text-to-text"], "main": "provider.py",
                "models": [{"id": "upper", "capabilities": ["text-to-text"]}], "exportName": "EchoProvider"}
    url = make_provider("long", manifest, {"provider.py": echo})
    assert mediaconduit("submit", "hi", "--provider", url, "--model", "upper").returncode == 0
    proc = mediaconduit("status")
    assert proc.returncode == 0, proc.stderr
    assert long_id in proc.stdout and text_worker.hostname in proc.stdout


def test_version():
    from importlib.metadata import version

    proc = mediaconduit("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"mediaconduit, version {version('mediaconduit-worker')}"


def test_a_redis_that_does_not_answer_is_named_not_a_class():
    from conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = mediaconduit("cache", "stats", env={"MEDIACONDUIT_BROKER_URL": url, "MEDIACONDUIT_RESULT_BACKEND": url})
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line.startswith(f"error: cannot reach Redis at {url} (") and "Connection refused" in line, line
    assert line.endswith("is it running, and is MEDIACONDUIT_RESULT_BACKEND right?"), line


def test_flower_on_a_port_in_use_names_the_port():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = mediaconduit("flower", "--port", str(port), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (f"error: cannot serve Flower on 127.0.0.1:{port}: the port is in use "
                                            "(another Flower?); choose another with --port or MEDIACONDUIT_FLOWER_PORT")
    clean_stderr(proc.stderr)


def test_an_option_of_the_wrong_type_is_refused_before_queueing_and_on_the_worker(text_worker, echo_url):
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.errors import InvalidInputError
    from mediaconduit_worker.worker.app import transform

    proc = mediaconduit("submit", "hi", "--provider", echo_url, "--model", "echo", "-o", "prefix=[1,2]")
    assert proc.returncode == 1
    assert one_error_line(proc) == ("error: option 'prefix' of provider 'echo-provider' model 'echo' must be string "
                                    "(its manifest's parameters), got list [1, 2]")
    job = transform.delay("hi", echo_url, "echo", {"prefix": [1, 2]})  # past the producer's check: the worker's
    with pytest.raises(InvalidInputError, match="option 'prefix' of provider 'echo-provider' model 'echo' must be string"):
        job.get(timeout=60)
    assert app.AsyncResult(job.id).state == "FAILURE"


def test_a_misspelled_option_runs_with_a_warning_and_a_loose_model_takes_anything(text_worker, echo_url):
    proc = mediaconduit("submit", "hi", "--provider", echo_url, "--model", "echo", "-o", "prefx=>")
    assert proc.returncode == 0, proc.stderr
    warning = ("option 'prefx' is not a declared parameter of provider 'echo-provider' model 'echo' (prefix), "
               "passed on as given; did you mean 'prefix'?")
    assert proc.stderr.splitlines() == [f"warning: {warning}"]
    assert json.loads(proc.stdout)["metadata"]["warnings"] == [warning]
    loose = mediaconduit("submit", "hi", "--provider", echo_url, "--model", "upper", "-o", "anything=[1,2]")
    assert loose.returncode == 0 and loose.stderr == "", loose.stderr
    assert "warnings" not in json.loads(loose.stdout)["metadata"]


def test_status_names_a_broker_that_refuses_or_closes_not_a_class():
    import socket
    import threading

    from conftest import free_port

    closing = socket.socket()
    closing.bind(("127.0.0.1", 0))
    closing.listen()

    def close_each() -> None:
        while True:
            try:
                conn, _ = closing.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=close_each, daemon=True).start()
    try:
        for port, causes in ((free_port(), ["Connection refused"]),  # closed before or after Redis's greeting:
                             (closing.getsockname()[1], ["Connection closed by server", "Connection reset by peer"])):
            url = f"redis://127.0.0.1:{port}/0"
            proc = mediaconduit("status", "--json", env={"MEDIACONDUIT_BROKER_URL": url, "MEDIACONDUIT_RESULT_BACKEND": url})
            assert proc.returncode == 1 and proc.stdout == ""
            line = one_error_line(proc)
            assert line.startswith(f"error: cannot reach Redis at {url} (") and any(c in line for c in causes), line
            assert line.endswith("; is it running, and is MEDIACONDUIT_BROKER_URL right?") and "OperationalError" not in line
    finally:
        closing.close()
