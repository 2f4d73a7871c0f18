"""``providers validate`` over every local and remote reference provider and over broken providers, each
broken in one way that the validator must find and name. Docker providers: tests/toolkit/test_docker_toolkit.py."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, publish
from support.remote import KEY_VARS, REMOTE_PROVIDERS
from support.toolkit import run_cli, validate

from mediaconduit_worker.manifest import load_provider_manifest

LOCAL = ["echo", "textops", "cowsay-local", "textrender"]
REMOTE = [*REMOTE_PROVIDERS, "replicate", "fal"]
REMOTE_KEYS = [*KEY_VARS, "REPLICATE_API_TOKEN", "FAL_KEY"]
PASSING = {"pass", "warn"}


@pytest.mark.parametrize("name", LOCAL)
def test_local_reference_providers_pass_every_check(name):
    url = publish(REPO / "providers" / f"{name}-provider", f"{name}-provider")
    code, checks, report = validate(url)
    assert code == 0, report
    for check in ("manifest", "entrypoint", "dependencies", "models", "transform", "output", "generation-prompt",
                  "errors", "secrets"):
        assert checks[check]["status"] in PASSING, (check, checks[check])
    assert "service" not in checks and "remote" not in checks


@pytest.mark.parametrize("name", REMOTE)
def test_remote_reference_providers_without_keys_report_remote_skipped(name, monkeypatch):
    for var in REMOTE_KEYS + ["OLLAMA_BASE_URL"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://127.0.0.1:9")  # nothing listens: unreachable at once
    url = publish(REPO / "providers" / f"{name}-provider", f"{name}-provider")
    code, checks, report = validate(url)
    assert code == 1 and report["ok"] and not report["complete"], report  # nothing failed, but not validated
    assert checks["remote"]["status"] == "skip"
    assert re.search(r"set [A-Z]+_[A-Z_]+\b", checks["remote"]["detail"]), checks["remote"]  # names the variable
    assert checks["transform"]["status"] == "skip"
    assert checks["manifest"]["status"] in PASSING and checks["entrypoint"]["status"] == "pass"
    manifest = load_provider_manifest(REPO / "providers" / f"{name}-provider")
    if manifest.dynamic_models:  # only the API knows the models: not "pass"
        assert checks["models"]["status"] == "skip" and "was not asked" in checks["models"]["detail"], checks["models"]
    code, _, output = run_cli("providers", "validate", url)
    assert code == 1 and "all checks passed" not in output
    every = report["checks"]
    skipped = [c["name"] for c in every if c["status"] == "skip"]
    assert output.rstrip().splitlines()[-1] == (
        f"error: not validated: {len(every) - len(skipped)} of {len(every)} checks passed, {len(skipped)} skipped "
        f"({', '.join(skipped)}); their detail says why")


GOOD_MODEL = """
import time
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text

class M(TextToTextModel):
    def transform(self, input, options=None):
        started = time.perf_counter()
        return Text.from_string(input_text(input).upper(),
                                metadata={"generation_prompt": self.generation_prompt(input, options, started)})

class P(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: M}
"""


def manifest(**overrides):
    base = {"id": "broken", "name": "Broken", "type": "local", "capabilities": ["text-to-text"],
            "models": [{"id": "m", "capabilities": ["text-to-text"]}], "main": "provider.py", "exportName": "P"}
    base.update(overrides)
    return base


def body(transform: str, imports: str = "") -> str:
    """A provider whose one model's transform body is ``transform`` (has ``input``, ``options``, ``started``)."""
    return GOOD_MODEL.replace(
        """        started = time.perf_counter()
        return Text.from_string(input_text(input).upper(),
                                metadata={"generation_prompt": self.generation_prompt(input, options, started)})""",
        "        started = time.perf_counter()\n" + transform) + imports


UNKNOWN_MODEL_ACCEPTED = GOOD_MODEL + """
    def get_model(self, model_id):
        return M(model_id, provider=self)
"""

# (defect, the check(s) that must fail, words its detail must hold, manifest, provider.py)
BROKEN = [
    ("manifest of the wrong type", "manifest", ["type", "banana"], manifest(type="banana"), GOOD_MODEL),
    ("model capability the provider does not list", "manifest", ["image-to-text", "'m'"],
     manifest(models=[{"id": "m", "capabilities": ["image-to-text"]}]), GOOD_MODEL),
    ("npm-style dependency range", "dependencies", ["cowsay", "^6.1"], manifest(dependencies={"cowsay": "^6.1"}),
     GOOD_MODEL),
    ("exportName names nothing", "entrypoint", ["exportName", "Missing"], manifest(exportName="Missing"), GOOD_MODEL),
    ("main file missing", "entrypoint", ["main", "nowhere.py"], manifest(main="nowhere.py"), GOOD_MODEL),
    ("no models", "models", ["no models"], manifest(models=[]), GOOD_MODEL),
    ("model raises on its sample", "transform", ["'m'", "ZeroDivisionError"], manifest(),
     body("        return 1 / 0\n")),
    ("text-to-image model returns text", "output", ["returned text, not image"],
     manifest(capabilities=["text-to-image"], models=[{"id": "m", "capabilities": ["text-to-image"]}]),
     GOOD_MODEL.replace("TextToTextModel", "TextToImageModel").replace("TEXT_TO_TEXT", "TEXT_TO_IMAGE")),
    ("no generation prompt", "generation-prompt", ["generation_prompt"], manifest(),
     body("        return Text.from_string(input_text(input))\n")),
    # An unredacted prompt also puts the key into the result: two checks fail, for the one defect.
    ("options kept unredacted in the prompt", "generation-prompt+secrets", ["not redacted"], manifest(),
     body("        return Text.from_string(input_text(input), metadata={'generation_prompt': "
          "{'input': input, 'options': dict(options or {})}})\n")),
    ("the key leaks into the output", "secrets", ["appears in its output"], manifest(),
     body("        return Text.from_string(input_text(input) + str(options),\n"
          "            metadata={'generation_prompt': self.generation_prompt(input, options, started)})\n")),
    ("any model id is accepted", "errors", ["instead of raising UnknownModelError"], manifest(), UNKNOWN_MODEL_ACCEPTED),
]


@pytest.mark.parametrize("defect, check, words, manifest_data, code", BROKEN, ids=[b[0] for b in BROKEN])
def test_each_defect_is_found_and_named(make_provider, defect, check, words, manifest_data, code):
    url = make_provider("broken", manifest_data, {"provider.py": code})
    exit_code, checks, report = validate(url)
    expected = check.split("+")
    check = expected[0]
    assert exit_code == 1, report
    assert checks[check]["status"] == "fail", (defect, report)
    for word in words:
        assert word in checks[check]["detail"], (defect, checks[check]["detail"])
    failed = [name for name, c in checks.items() if c["status"] == "fail"]
    assert failed == expected, (defect, failed)


def test_one_model_and_a_given_input(make_provider):
    url = make_provider("two", manifest(models=[{"id": "m", "capabilities": ["text-to-text"]},
                                                {"id": "n", "capabilities": ["text-to-text"]}]), {"provider.py": GOOD_MODEL})
    code, checks, _ = validate(url, "--model", "n", "--input", "shout this")
    assert code == 0
    assert checks["transform"]["detail"] == "n: 'SHOUT THIS'"


def test_the_table_names_the_failed_check(make_provider):
    from support.toolkit import run_cli

    url = make_provider("broken", manifest(exportName="Missing"), {"provider.py": GOOD_MODEL})
    code, _, output = run_cli("providers", "validate", url)
    assert code == 1 and "entrypoint" in output and "failed: entrypoint" in output


STANDIN_MODELS = {"openrouter": "openai/gpt-4o-mini", "together": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
                  "xai": "grok-3-mini", "openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "ollama": "llama3.2",
                  "elevenlabs": "Rachel", "replicate": "black-forest-labs/flux-schnell", "fal": "fal-ai/flux/fast"}


def test_remote_reference_providers_with_keys_pass_every_check(monkeypatch):
    """With keys and an API that answers (the stand-ins), the remote checks run for real."""
    from support.standin_apis import StandInAPIs
    from support.standin_media_apis import MediaAPIs

    apis = MediaAPIs().start()  # the chat, speech and image APIs, and Replicate's and fal's queues
    try:
        for var, value in {**StandInAPIs.env(apis), **apis.env()}.items():
            monkeypatch.setenv(var, value)
        for name in REMOTE:
            url = publish(REPO / "providers" / f"{name}-provider", f"{name}-provider")
            code, checks, report = validate(url, "--model", STANDIN_MODELS[name])
            assert code == 0, report
            assert {n: c["status"] for n, c in checks.items() if c["status"] not in PASSING} == {}, name
    finally:
        apis.stop()
