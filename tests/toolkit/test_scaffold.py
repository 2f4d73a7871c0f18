"""``providers new``: what it writes passes its own tests, ``providers validate``, and runs through a worker unchanged.

The --docker variant is in tests/toolkit/test_docker_toolkit.py.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from conftest import WorkerProcess, publish
from support.remote import QueueWorker
from support.standin_apis import KEYS, StandInAPIs
from support.toolkit import assert_record, run_cli, validate

MEDIA = ["text-to-image", "text-to-audio", "image-to-text", "audio-to-text", "image-to-image", "audio-to-audio"]


def scaffold(tmp_path, name: str, *args: str):
    code, _, output = run_cli("providers", "new", name, "--dir", str(tmp_path), *args)
    assert code == 0, output
    return tmp_path / f"{name}-provider"


def run_generated_tests(folder) -> str:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=folder,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def media_worker():
    w = WorkerProcess(MEDIA, concurrency=1).wait_ready()
    yield w
    w.stop()


def test_a_local_provider_for_every_template_capability(tmp_path, text_worker, media_worker):
    from celery import chain

    from mediaconduit_worker import transform

    name = f"acme{uuid.uuid4().hex[:4]}"
    caps = ["text-to-text", *MEDIA]
    folder = scaffold(tmp_path, name, *(arg for c in caps for arg in ("--capability", c)))
    assert {p.name for p in folder.iterdir()} == {"MediaConduit.provider.yml", "README.md", "src", "tests"}
    assert f"{len(caps)} passed" in run_generated_tests(folder)

    url = publish(folder, f"{name}-provider", org="tests")
    code, checks, report = validate(url)
    assert code == 0, report
    assert checks["transform"]["detail"].count(f"{name}-") == len(caps)

    # Through the queue, unchanged: text → image → text, and text → audio → audio → text.
    picture = chain(transform.s("hi", url, f"{name}-text-to-image"), transform.s(url, f"{name}-image-to-image"),
                    transform.s(url, f"{name}-image-to-text")).delay().get(timeout=120)
    assert picture["asset"]["content"] == "PNG image 16x8"
    sound = chain(transform.s("hello", url, f"{name}-text-to-audio"), transform.s(url, f"{name}-audio-to-audio"),
                  transform.s(url, f"{name}-audio-to-text")).delay().get(timeout=120)
    assert sound["asset"]["content"] == "0.10 seconds of audio"
    shout = transform.delay("hello", url, f"{name}-text-to-text").get(timeout=60)
    assert shout["asset"]["content"] == "HELLO"
    for result in (picture, sound, shout):
        assert_record(result)


def test_a_remote_provider_skips_without_a_key_and_runs_with_one(tmp_path):
    name = f"rem{uuid.uuid4().hex[:4]}"
    env_name = name.upper()
    folder = scaffold(tmp_path, name, "--remote", "--api-model", "gpt-4o-mini")
    source = (folder / "src" / f"{name}_provider" / "__init__.py").read_text()
    assert "RemoteProvider" in source and f"{env_name}_API_KEY" in source
    assert "1 skipped" in run_generated_tests(folder)  # no key: the API test says so

    url = publish(folder, f"{name}-provider", org="tests")
    code, checks, report = validate(url)
    assert code == 1 and report["ok"] and not report["complete"], report  # skipped checks: not validated yet
    assert checks["remote"]["status"] == "skip" and f"{env_name}_API_KEY" in checks["remote"]["detail"]

    apis = StandInAPIs().start()  # the OpenAI-style stand-in speaks the skeleton's wire format
    env = {f"{env_name}_API_KEY": KEYS["openai"], f"{env_name}_BASE_URL": f"{apis.url}/openai/v1"}
    worker = QueueWorker(f"scaffold-{name}", env).wait_ready()
    try:
        result = worker.run("Hello there", url, "gpt-4o-mini")
        assert "Hello there" in result["asset"]["content"]
        assert_record(result)
    finally:
        worker.stop()
        apis.stop()


def test_names_and_capabilities_are_checked(tmp_path):
    code, _, output = run_cli("providers", "new", "9lives", "--dir", str(tmp_path))
    assert code == 2 and "starts with a letter" in output
    code, _, output = run_cli("providers", "new", "vid", "--capability", "text-to-video", "--dir", str(tmp_path))
    assert code == 2 and "no template for text-to-video" in output
    code, _, output = run_cli("providers", "new", "x", "--capability", "text-to-sandwich", "--dir", str(tmp_path))
    assert code == 2 and "unknown capability 'text-to-sandwich'" in output
    scaffold(tmp_path, "twice")
    code, _, output = run_cli("providers", "new", "twice", "--dir", str(tmp_path))
    assert code == 1 and "already exists" in output
