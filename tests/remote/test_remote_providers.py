"""Remote API providers (OpenRouter, Together, X.AI, OpenAI, Anthropic, Ollama, ElevenLabs) end to end.

No real endpoint is reachable here, so the APIs are stand-ins (tests/support/standin_apis.py): a local
HTTP server speaking each API's documented wire format - OpenAI chat completions, models,
images and audio speech; OpenRouter /models with pricing strings; Together /models with its
`type` field; the Anthropic Messages API and its error body; Ollama /api/tags, /api/generate and
the /api/pull NDJSON stream; ElevenLabs /v1/voices and /v1/text-to-speech/{voice_id}. They are
not mocks of our code: each provider repository is published and loaded by its
https://github.com/MediaConduit/<name>-provider URL by a real worker process, jobs go through
Redis, and the provider talks real HTTP through the SDK's HTTP layer. Base URLs and keys reach
the workers through their environment, as in production.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from conftest import POOLS, REPO
from support.remote import KEY_VARS, QueueWorker, publish_remote_providers
from support.standin_apis import FAKE_MP3, KEYS, PNG, URL_PNG, Reply, StandInAPIs


@pytest.fixture(autouse=True)
def _fresh_apis(apis: StandInAPIs) -> None:
    apis.reset()


@pytest.fixture(scope="module")
def urls() -> dict[str, str]:
    return publish_remote_providers()


@pytest.fixture(scope="module", params=POOLS)
def worker(request: pytest.FixtureRequest, apis: StandInAPIs, urls: dict[str, str]) -> Iterator[QueueWorker]:
    """One worker for every provider, its environment pointing at the stand-ins with valid keys; each test
    using it runs once per Celery pool."""
    w = QueueWorker("remote-tests", apis.env(), pool=request.param).wait_ready()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def keyless_worker(apis: StandInAPIs, urls: dict[str, str]) -> Iterator[QueueWorker]:
    """Same stand-ins, but no API key anywhere in the environment."""
    env = {k: v for k, v in apis.env().items() if k not in KEY_VARS}
    w = QueueWorker("remote-tests-nokey", env, drop=KEY_VARS).wait_ready()
    yield w
    w.stop()


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for key in KEYS.values():
            assert key not in text


def blob(result: dict) -> bytes:
    from mediaconduit_worker.blobs import BlobStore

    return BlobStore().get(result["asset"]["uri"])


# -- through the queue ----------------------------------------------------------------------------
def test_openrouter_chat_maps_options_and_reports_usage_and_cost(worker, urls, apis):
    opts = {"systemPrompt": "Be brief", "temperature": 0.3, "maxOutputTokens": 64, "topP": 0.9}
    result = worker.run("Hello there", urls["openrouter"], "openai/gpt-4o-mini", opts)

    assert result["asset"]["content"] == "[openai/gpt-4o-mini] Hello there (system: Be brief)"
    meta = result["asset"]["metadata"]
    assert meta["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    # OpenRouter's own figure; estimated first from its pricing: 5 tokens in (19 characters), 64 allowed out.
    assert meta["cost"] == {"total": 0.0000123, "usd": 0.0000123, "currency": "USD", "source": "api",
                            "estimated_usd": pytest.approx(5 * 0.15e-6 + 64 * 0.6e-6)}
    assert result["metadata"]["generation_prompt"]["provider"] == "openrouter-provider"
    assert result["metadata"]["generation_prompt"]["options"] == opts

    (call,) = apis.calls("/openrouter/api/v1/chat/completions")
    assert call.headers["authorization"] == f"Bearer {KEYS['openrouter']}"
    assert call.body == {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hello there"}],
        "temperature": 0.3, "max_tokens": 64, "top_p": 0.9, "usage": {"include": True},
    }
    assert_no_secrets(json.dumps(result), worker.log_text())


def test_openrouter_response_format_json(worker, urls, apis):
    result = worker.run("data", urls["openrouter"], "meta-llama/llama-3.3-70b-instruct:free", {"responseFormat": "json"})
    assert json.loads(result["asset"]["content"]) == {"model": "meta-llama/llama-3.3-70b-instruct:free", "echo": "data"}
    assert apis.calls("/openrouter/api/v1/chat/completions")[0].body["response_format"] == {"type": "json_object"}


def test_together_chat_images_and_speech(worker, urls, apis):
    chat = worker.run("Hi", urls["together"], "meta-llama/Llama-3.3-70B-Instruct-Turbo")
    assert chat["asset"]["content"] == "[meta-llama/Llama-3.3-70B-Instruct-Turbo] Hi"
    usage = chat["asset"]["metadata"]["usage"]
    assert chat["asset"]["metadata"]["cost"]["source"] == "pricing"
    assert chat["asset"]["metadata"]["cost"]["total"] == pytest.approx(usage["total_tokens"] * 0.88e-6)
    assert chat["asset"]["metadata"]["cost"]["usd"] == chat["asset"]["metadata"]["cost"]["total"]

    image = worker.run("a red square", urls["together"], "black-forest-labs/FLUX.1-schnell",
                       {"width": 512, "height": 512, "steps": 4})
    assert image["asset"]["type"] == "image" and image["asset"]["mime_type"] == "image/png"
    assert image["asset"]["uri"].startswith("blob://") and blob(image) == PNG
    assert image["metadata"]["generation_prompt"]["capability"] == "text-to-image"
    # Media are priced by what they produce: an image at Together's per-image price, not as 0 tokens.
    cost = image["asset"]["metadata"]["cost"]
    assert (cost["estimated_usd"], cost["usd"], cost["source"]) == (0.0027, 0.0027, "pricing")
    body = apis.calls("/together/v1/images/generations")[0].body
    assert body == {"model": "black-forest-labs/FLUX.1-schnell", "prompt": "a red square", "response_format": "b64_json",
                    "width": 512, "height": 512, "steps": 4}

    by_url = worker.run("a green square", urls["together"], "black-forest-labs/FLUX.1-schnell", {"responseFormat": "url"})
    assert blob(by_url) == URL_PNG and by_url["asset"]["metadata"]["image_source"] == "url"
    (download,) = apis.calls("/together/files/generated.png")
    assert "authorization" not in download.headers  # the key never goes to another host

    speech = worker.run("Hello", urls["together"], "cartesia/sonic", {"voice": "calm man", "format": "wav"})
    assert speech["asset"]["type"] == "audio" and speech["asset"]["mime_type"] == "audio/wav"
    assert blob(speech)[:4] == b"RIFF"
    cost = speech["asset"]["metadata"]["cost"]  # $65 per million characters
    assert cost["usd"] == cost["estimated_usd"] == pytest.approx(5 * 65e-6) and cost["source"] == "pricing"
    assert apis.calls("/together/v1/audio/speech")[0].body == {
        "model": "cartesia/sonic", "input": "Hello", "voice": "calm man", "response_format": "wav"}
    assert_no_secrets(json.dumps([chat, image, by_url, speech]), worker.log_text())


def test_together_models_route_to_their_capability_queue(urls):
    from mediaconduit_worker.worker.app import TRANSFORM_TASK, transform_queue

    def queue(model: str, options: dict | None = None) -> str:
        return transform_queue(TRANSFORM_TASK, ("x", urls["together"], model, options or {}), {}, {})["queue"]

    assert queue("black-forest-labs/FLUX.1-schnell") == "text-to-image"
    assert queue("cartesia/sonic") == "text-to-audio"
    assert queue("meta-llama/Llama-3.3-70B-Instruct-Turbo") == "text-to-text"
    assert queue("black-forest-labs/FLUX.1-dev", {"capability": "text-to-image"}) == "text-to-image"


def test_xai_chat_without_listing_models(worker, urls, apis):
    result = worker.run("Why?", urls["xai"], "grok-3-mini", {"systemPrompt": "Short answers"})
    assert result["asset"]["content"] == "[grok-3-mini] Why? (system: Short answers)"
    assert result["asset"]["metadata"]["cost"]["source"] == "pricing"
    assert apis.calls("/xai/v1/models") == []
    assert apis.calls("/xai/v1/chat/completions")[0].headers["authorization"] == f"Bearer {KEYS['xai']}"


def test_openai_chat(worker, urls, apis):
    result = worker.run("Hello", urls["openai"], "gpt-4o-mini", {"temperature": 0, "stop": "END", "seed": 7})
    assert result["asset"]["content"] == "[gpt-4o-mini] Hello"
    assert result["asset"]["metadata"]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert result["asset"]["metadata"]["cost"]["usd"] == pytest.approx(1 * 0.15e-6 + 2 * 0.6e-6)  # published prices
    body = apis.calls("/openai/v1/chat/completions")[0].body
    assert body["temperature"] == 0 and body["stop"] == ["END"] and body["seed"] == 7


def test_anthropic_messages_api(worker, urls, apis):
    result = worker.run("Bonjour", urls["anthropic"], "claude-haiku-4-5", {"systemPrompt": "Réponds en français"})
    assert result["asset"]["content"] == "[claude-haiku-4-5] Bonjour (system: Réponds en français)"
    meta = result["asset"]["metadata"]
    assert meta["usage"]["prompt_tokens"] == 4 and meta["finish_reason"] == "end_turn"
    assert meta["cost"]["total"] == pytest.approx(4 * 1e-6 + meta["usage"]["completion_tokens"] * 5e-6)
    (call,) = apis.calls("/anthropic/v1/messages")
    assert call.headers["x-api-key"] == KEYS["anthropic"] and call.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in call.headers
    assert call.body == {"model": "claude-haiku-4-5", "max_tokens": 1024, "system": "Réponds en français",
                         "messages": [{"role": "user", "content": "Bonjour"}]}
    assert_no_secrets(json.dumps(result), worker.log_text())


def test_anthropic_error_body_reaches_the_caller(worker, urls, apis):
    apis.script("POST", "/anthropic/v1/messages",
                Reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}))
    with pytest.raises(Exception) as err:
        worker.run("x", urls["anthropic"], "claude-haiku-4-5")
    assert "anthropic-provider" in str(err.value) and "HTTP 400" in str(err.value)
    assert "invalid_request_error: prompt is too long" in str(err.value)


def test_ollama_generate_and_pull_on_demand(worker, urls, apis):
    opts = {"systemPrompt": "terse", "temperature": 0.1, "maxOutputTokens": 32, "topP": 0.5}
    result = worker.run("Hi", urls["ollama"], "llama3.2", opts)
    assert result["asset"]["content"] == "[llama3.2:latest] Hi (system: terse)"  # the name /api/tags lists
    assert result["asset"]["metadata"]["usage"] == {"prompt_tokens": 26, "completion_tokens": 12, "total_tokens": 38}
    assert apis.calls("/ollama/api/generate")[0].body == {
        "model": "llama3.2:latest", "prompt": "Hi", "stream": False, "system": "terse",
        "options": {"temperature": 0.1, "top_p": 0.5, "num_predict": 32}}
    assert apis.calls("/ollama/api/pull") == []

    pulled = worker.run("Hi", urls["ollama"], "mistral")
    assert pulled["asset"]["content"] == "[mistral] Hi" and pulled["asset"]["metadata"]["pulled"] is True
    assert apis.calls("/ollama/api/pull")[0].body == {"model": "mistral", "stream": True}
    log = worker.log_text()
    assert "ollama pull mistral: pulling manifest" in log and "100%" in log and "ollama: pulled mistral" in log


def test_ollama_pull_error_line_fails_the_job_clearly(worker, urls):
    with pytest.raises(Exception) as err:
        worker.run("Hi", urls["ollama"], "no-such-model")
    message = str(err.value)
    assert "pulling model 'no-such-model' failed: pull model manifest: file does not exist" in message


def test_elevenlabs_voice_as_model(worker, urls, apis):
    result = worker.run("Hello world", urls["elevenlabs"], "Rachel", {"stability": 0.4, "similarityBoost": 0.8})
    asset = result["asset"]
    assert asset["type"] == "audio" and asset["mime_type"] == "audio/mpeg" and blob(result) == FAKE_MP3
    assert asset["metadata"]["voice_id"] == "21m00Tcm4TlvDq8ikWAM" and asset["metadata"]["usage"] == {"characters": 11}
    (call,) = apis.calls("/elevenlabs/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM")
    assert call.headers["xi-api-key"] == KEYS["elevenlabs"] and "authorization" not in call.headers
    assert call.query == {"output_format": ["mp3_44100_128"]}
    assert call.body == {"text": "Hello world", "model_id": "eleven_multilingual_v2",
                         "voice_settings": {"stability": 0.4, "similarity_boost": 0.8}}
    by_id = worker.run("Hi", urls["elevenlabs"], "pNInz6obpgDQGcFmaJgB", {"capability": "text-to-audio"})
    assert by_id["asset"]["metadata"]["voice_name"] == "Adam"
    # Without ELEVENLABS_PRICE_PER_1K_CHARACTERS the price is unknown: said so, not reported as 0.
    assert by_id["asset"]["metadata"]["cost"] == {"estimated_usd": None, "usd": None, "total": None,
                                                  "currency": "USD", "source": "unpriced"}
    assert_no_secrets(json.dumps([result, by_id]), worker.log_text())


# -- failures through the queue ---------------------------------------------------------------------
def test_rejected_key_is_a_clear_error_without_the_key(worker, urls, apis):
    # A revoked key: the API echoes it back in its message; the client must scrub it.
    apis.script("POST", "/openai/v1/chat/completions", Reply(401, {"error": {
        "message": f"Incorrect API key provided: {KEYS['openai']}.", "type": "invalid_request_error",
        "param": None, "code": "invalid_api_key"}}))
    with pytest.raises(Exception) as err:
        worker.run("x", urls["openai"], "gpt-4o-mini")
    message = str(err.value)
    assert type(err.value).__name__ == "ProviderHTTPError"
    assert "openai-provider: POST /chat/completions failed with HTTP 401" in message
    assert "Incorrect API key provided: [REDACTED]" in message and "check OPENAI_API_KEY" in message
    assert_no_secrets(message, worker.log_text())


def test_malformed_json_is_a_clear_error(worker, urls, apis):
    apis.script("POST", "/openrouter/api/v1/chat/completions",
                Reply(200, raw=b"<html>upstream error</html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(Exception) as err:
        worker.run("x", urls["openrouter"], "openai/gpt-4o-mini")
    assert type(err.value).__name__ == "ProviderResponseError"
    assert "openrouter-provider: POST /chat/completions returned malformed JSON (HTTP 200, text/html)" in str(err.value)


def test_rate_limit_then_success_honours_retry_after(worker, urls, apis):
    apis.script("POST", "/openai/v1/chat/completions", Reply(429, {"error": {
        "message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}},
        headers={"Retry-After": "1"}))
    result = worker.run("again", urls["openai"], "gpt-4o-mini")
    assert result["asset"]["content"] == "[gpt-4o-mini] again"
    first, second = apis.calls("/openai/v1/chat/completions")
    assert second.at - first.at >= 0.95


def test_persistent_5xx_goes_back_to_the_queue_then_succeeds(worker, urls, apis):
    busy = Reply(503, {"error": {"message": "overloaded", "type": "server_error"}}, headers={"Retry-After": "1"})
    apis.script("POST", "/xai/v1/chat/completions", busy, busy, busy)  # one more than the in-process retries
    result = worker.run("later", urls["xai"], "grok-3", timeout=90)
    assert result["asset"]["content"] == "[grok-3] later"
    assert len(apis.calls("/xai/v1/chat/completions")) == 4
    assert "transient error from xai-provider/grok-3" in worker.log_text()


def test_a_hung_api_ends_with_the_jobs_time_limit_and_frees_the_slot(worker, urls, apis):
    """The API never answers: each job fails at its ``time_limit=`` in every pool, naming provider and
    model, and the worker's slots are free again for the next job."""
    from mediaconduit_worker import TimeLimitError

    hung = Reply(200, {}, delay=600)
    apis.script("POST", "/openai/v1/chat/completions", hung, hung)
    started = time.monotonic()
    jobs = [worker.submit(f"hello {i}", urls["openai"], "gpt-4o-mini", time_limit=3) for i in range(2)]  # both slots
    for job in jobs:
        with pytest.raises(TimeLimitError) as err:
            job.get(timeout=60)
        assert str(err.value) == ("provider 'openai-provider' model 'gpt-4o-mini' exceeded the job's time limit of 3s "
                                  "(during POST /chat/completions)")
    assert time.monotonic() - started < 15  # on time, not after the client's 120 s timeout
    assert worker.run("next", urls["openai"], "gpt-4o-mini")["asset"]["content"] == "[gpt-4o-mini] next"


def test_missing_key_names_the_provider_and_variable(keyless_worker, urls, apis):
    for name, model, var in [("openrouter", "openai/gpt-4o-mini", "OPENROUTER_API_KEY"),
                             ("anthropic", "claude-haiku-4-5", "ANTHROPIC_API_KEY"),
                             ("elevenlabs", "Rachel", "ELEVENLABS_API_KEY"),
                             ("together", "black-forest-labs/FLUX.1-schnell", "TOGETHER_API_KEY")]:
        with pytest.raises(Exception) as err:
            keyless_worker.run("x", urls[name], model)
        assert type(err.value).__name__ == "ConfigurationError"
        assert f"provider '{name}-provider' has no API key: set {var}" in str(err.value)
    # Nothing that needs a key was sent; OpenRouter's public model list was still read.
    assert apis.calls("/openrouter/api/v1/chat/completions") == []
    assert apis.calls("/elevenlabs/v1/voices") == []
    # Ollama is local and needs no key.
    assert keyless_worker.run("Hi", urls["ollama"], "llama3.2")["asset"]["content"] == "[llama3.2:latest] Hi"


# -- providers loaded in this process (no queue): discovery and helpers ------------------------------
@pytest.fixture
def load(apis, urls, monkeypatch):
    """Load a provider by URL in this process with the stand-in environment (a fresh registry)."""
    from mediaconduit_worker.worker.loader import ProviderRegistry

    for key, value in apis.env().items():
        monkeypatch.setenv(key, value)
    registry = ProviderRegistry()
    return lambda name: registry.get(urls[name]).provider


def test_openrouter_models_pricing_and_free_models(load, apis):
    provider = load("openrouter")
    ids = [m.id for m in provider.models]
    assert ids == ["openai/gpt-4o-mini", "meta-llama/llama-3.3-70b-instruct:free", "google/gemini-2.0-flash-exp:free"]
    assert provider.get_model_info("openai/gpt-4o-mini").pricing["prompt"] == pytest.approx(0.00000015)
    assert [m.id for m in provider.get_free_models()] == ["meta-llama/llama-3.3-70b-instruct:free",
                                                          "google/gemini-2.0-flash-exp:free"]
    assert "authorization" in apis.calls("/openrouter/api/v1/models")[0].headers


def test_together_discovery_puts_models_in_their_capability(load):
    from mediaconduit_worker import MediaCapability as C

    provider = load("together")
    assert {m.id for m in provider.get_models_for_capability(C.TEXT_TO_TEXT)} == {
        "meta-llama/Llama-3.3-70B-Instruct-Turbo", "mistralai/Mixtral-8x7B-v0.1"}
    assert {m.id for m in provider.get_models_for_capability(C.TEXT_TO_IMAGE)} == {
        "black-forest-labs/FLUX.1-schnell", "black-forest-labs/FLUX.1-dev"}
    assert [m.id for m in provider.get_models_for_capability(C.TEXT_TO_AUDIO)] == ["cartesia/sonic"]
    assert "BAAI/bge-large-en-v1.5" not in {m.id for m in provider.models}
    assert type(provider.get_model("black-forest-labs/FLUX.1-dev")).__name__ == "OpenAICompatImageModel"


def test_xai_models_known_without_a_call_and_helpers(load, apis, monkeypatch):
    provider = load("xai")
    assert "grok-4" in {m.id for m in provider.models}
    assert provider.get_fastest_model().id == "grok-4-fast-non-reasoning"
    assert provider.get_latest_model().id == "grok-4-fast-non-reasoning"
    assert apis.requests == []
    monkeypatch.delenv("XAI_BASE_URL")
    provider.configure({})
    provider.config.pop("base_url", None)
    assert provider.base_url == "https://api.x.ai/v1"


def test_openai_discovery_keeps_chat_models(load):
    assert {m.id for m in load("openai").models} == {"gpt-4o-mini", "gpt-4o", "o3-mini"}


def test_configure_overrides_the_environment_key(load, apis):
    from mediaconduit_worker import ProviderHTTPError

    provider = load("openai")
    model = provider.get_model("gpt-4o-mini")
    provider.configure({"api_key": "sk-wrong-key-000000000000"})
    with pytest.raises(ProviderHTTPError) as err:
        model.transform("x")
    assert err.value.status == 401 and "sk-wrong-key" not in str(err.value)
    provider.configure({"api_key": KEYS["openai"]})
    assert model.transform("x").content == "[gpt-4o-mini] x"


def test_ollama_models_from_tags(load):
    provider = load("ollama")
    (model,) = provider.models
    assert model.id == "llama3.2:latest" and model.description == "llama 3.2B Q4_K_M"
    assert provider.get_model_info("llama3.2").id == "llama3.2:latest"


def test_provider_folders_are_complete_repositories():
    from mediaconduit_worker.manifest import load_provider_manifest

    for name in ["openrouter", "together", "xai", "openai", "anthropic", "ollama", "elevenlabs"]:
        root = REPO / "providers" / f"{name}-provider"
        manifest = load_provider_manifest(root)
        assert manifest.id == f"{name}-provider" and manifest.export_name and (root / manifest.main).is_file()
        assert (root / "README.md").is_file()


def test_chat_option_errors_name_the_option(worker, urls):
    with pytest.raises(Exception) as err:
        worker.run("x", urls["openai"], "gpt-4o-mini", {"temperature": "hot"})
    assert "option 'temperature' must be a number between 0 and 2" in str(err.value)
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        worker.run("x", urls["openai"], "gpt-4o-mini", {"responseFormat": "yaml"})
    assert "'responseFormat'" in str(err.value) and time.monotonic() - started < 30
