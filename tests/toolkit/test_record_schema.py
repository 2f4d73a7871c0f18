"""The record is complete: real results of every local and remote reference provider match docs/record.schema.json,
and carry what a replay needs. Docker reference providers: tests/toolkit/test_docker_toolkit.py."""

from __future__ import annotations

import hashlib

import pytest
from conftest import REPO, WorkerProcess, head_commit, publish
from support.remote import QueueWorker, publish_remote_providers
from support.standin_apis import KEYS, StandInAPIs
from support.standin_media_apis import FAL_KEY, REPLICATE_TOKEN, MediaAPIs
from support.toolkit import assert_record, prompts

LOCAL_TEXT = {"echo": "upper", "textops": "wordcount", "cowsay-local": "cowsay-default"}
# One real call per remote provider, against its stand-in API (tests/support/standin_apis.py).
REMOTE = {"openrouter": ("openai/gpt-4o-mini", {}), "together": ("meta-llama/Llama-3.3-70B-Instruct-Turbo", {}),
          "xai": ("grok-3-mini", {}), "openai": ("gpt-4o-mini", {}), "anthropic": ("claude-haiku-4-5", {}),
          "ollama": ("llama3.2", {}), "elevenlabs": ("Rachel", {}),
          "replicate": ("black-forest-labs/flux-schnell", {}), "fal": ("fal-ai/flux/fast", {})}


@pytest.mark.parametrize("name", sorted(LOCAL_TEXT))
def test_local_text_providers(name, text_worker):
    from mediaconduit_worker import transform

    url = publish(REPO / "providers" / f"{name}-provider", f"{name}-provider")
    result = transform.delay("hello record", url, LOCAL_TEXT[name], {"token": "sk-abcdefgh12345678"}).get(timeout=120)
    assert_record(result)
    prompt = result["metadata"]["generation_prompt"]
    assert prompt["input_digest"] == hashlib.sha256(b"hello record").hexdigest()
    assert prompt["output_digest"] == hashlib.sha256(result["asset"]["content"].encode()).hexdigest()
    assert prompt["provider_url"] == url and prompt["source"]["commit"] == head_commit(f"{name}-provider")
    assert prompt["options"] == {"token": "[REDACTED]"} and prompt["source"]["kind"] == "git"
    assert prompt["package_version"] and prompt["capability"] == "text-to-text"


def test_media_digests_and_chains(text_worker):
    """An image's output digest is its blob's; in a chain each step's input digest is the previous output digest."""
    from celery import chain

    from mediaconduit_worker import transform

    worker = WorkerProcess(["text-to-image"], concurrency=1).wait_ready()
    try:
        render = publish(REPO / "providers" / "textrender-provider", "textrender-provider")
        image = transform.delay("draw me", render, "render-png").get(timeout=300)
        assert_record(image)
        assert image["metadata"]["generation_prompt"]["output_digest"] == image["asset"]["sha256"]
        textops = publish(REPO / "providers" / "textops-provider", "textops-provider")
        result = chain(transform.s("a b a", textops, "rot13"), transform.s(textops, "wordcount")).delay().get(timeout=60)
        assert_record(result)
        steps = prompts(result)
        assert [p["model_id"] for p in steps] == ["rot13", "wordcount"]
        assert steps[1]["input_digest"] == steps[0]["output_digest"]
    finally:
        worker.stop()


def test_remote_providers(tmp_path):
    apis = MediaAPIs().start()
    urls = {**publish_remote_providers(),
            **{name: publish(REPO / "providers" / f"{name}-provider", f"{name}-provider") for name in ("replicate", "fal")}}
    worker = QueueWorker("record-remote", {**StandInAPIs.env(apis), **apis.env()}).wait_ready()
    try:
        for name, (model, options) in REMOTE.items():
            result = worker.run("Hello record", urls[name], model, options)
            assert_record(result)
            prompt = result["metadata"]["generation_prompt"]
            assert prompt["source"]["commit"] == head_commit(f"{name}-provider"), name
            assert not [key for key in [*KEYS.values(), FAL_KEY, REPLICATE_TOKEN] if key in str(result)], name
    finally:
        worker.stop()
        apis.stop()
