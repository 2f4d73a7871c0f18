"""Providers of the original TypeScript system, as published (their real manifests), are refused as npm
providers by name: on the producer before anything is queued, and by a worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real-manifests"
REAL_PROVIDERS = sorted(REAL.glob("*--MediaConduit.provider.yml"))
# The published repositories that name no `main` in their manifest say it in package.json (dist/index.js).
PACKAGE_JSON = {"whisper-provider", "ollama-provider"}


@pytest.mark.parametrize("path", REAL_PROVIDERS, ids=lambda p: p.name.split("--")[0])
def test_a_published_typescript_provider_is_named_an_npm_provider(path, make_provider):
    from mediaconduit_worker.errors import ProviderLoadError
    from mediaconduit_worker.worker.loader import ProviderRegistry

    name = path.name.split("--")[0]
    files = {"package.json": json.dumps({"name": name, "main": "dist/index.js"})} if name in PACKAGE_JSON else {}
    url = make_provider(name, path.read_text(), files)
    for load in (ProviderRegistry().manifest, ProviderRegistry().get):
        with pytest.raises(ProviderLoadError) as err:
            load(url)
        message = str(err.value)
        assert url in message
        assert "npm provider of the original TypeScript MediaConduit system" in message
        assert "this worker loads Python providers" in message
        assert ("package.json" if name in PACKAGE_JSON else "'main'") in message


def test_a_python_provider_with_a_package_json_still_loads(make_provider):
    from conftest import REPO

    from mediaconduit_worker.worker.loader import ProviderRegistry

    folder = REPO / "providers" / "echo-provider"
    url = make_provider("echo-with-npm-tooling", (folder / "MediaConduit.provider.yml").read_text(), {
        "package.json": '{"name": "tooling", "private": true}',
        "src/echo_provider/__init__.py": (folder / "src" / "echo_provider" / "__init__.py").read_text(),
    })
    assert ProviderRegistry().get(url).provider.get_model("upper").transform("ok").content == "OK"


def test_a_worker_fails_the_job_with_the_npm_message(text_worker, echo_url, make_provider):
    from mediaconduit_worker import transform

    url = make_provider("anthropic-provider", (REAL / "anthropic-provider--MediaConduit.provider.yml").read_text())
    r = transform.apply_async(("hello", url, "claude"), queue="text-to-text")
    with pytest.raises(Exception, match="npm provider of the original TypeScript MediaConduit system"):
        r.get(timeout=60)
    assert transform.delay("still serving", echo_url, "upper").get(timeout=60)["asset"]["content"] == "STILL SERVING"
