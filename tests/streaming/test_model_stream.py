"""A model's stream, in this process: the OpenAI-compatible base against the stand-in's documented SSE format
(``stream: true``, ``data:`` lines, ``[DONE]``), its final output the same as ``transform``'s, and its errors."""

from __future__ import annotations

from typing import Any

import pytest
from support.standin_apis import KEYS, Reply, chat_events

CHAT = "/openai/v1/chat/completions"


@pytest.fixture
def model(apis, urls, monkeypatch) -> Any:
    """OpenAI's chat model, loaded in this process with the stand-in environment."""
    from mediaconduit_worker.worker.loader import ProviderRegistry

    for key, value in apis.env().items():
        monkeypatch.setenv(key, value)
    return ProviderRegistry().get(urls["openai"]).provider.get_model("gpt-4o-mini")


def collect(stream: Any) -> tuple[list[Any], Any]:
    from mediaconduit_worker import run_stream

    chunks: list[Any] = []
    return chunks, run_stream(stream, chunks.append)


def without_timing(metadata: dict[str, Any]) -> dict[str, Any]:
    prompt = {k: v for k, v in metadata["generation_prompt"].items() if k not in ("processing_time", "timestamp")}
    return {**metadata, "generation_prompt": prompt}


def test_a_stream_yields_the_deltas_and_returns_what_transform_returns(model, apis):
    opts = {"systemPrompt": "Be brief", "temperature": 0.2}
    chunks, streamed = collect(model.stream("Hello streaming world", opts))
    whole = model.transform("Hello streaming world", opts)

    assert model.can_stream
    assert chunks == ["[gpt-4o-mini]", " Hello", " streaming", " world", " (system:", " Be", " brief)"]
    assert streamed.content == whole.content == "".join(chunks)
    assert without_timing(streamed.metadata) == without_timing(whole.metadata)
    assert streamed.metadata["usage"] == whole.metadata["usage"] and streamed.metadata["finish_reason"] == "stop"
    sent, plain = (call.body for call in apis.calls(CHAT))
    assert sent == {**plain, "stream": True, "stream_options": {"include_usage": True}}


def test_a_model_that_does_not_stream_yields_nothing_and_returns_its_output():
    from mediaconduit_worker import Model, Text

    class Plain(Model):
        def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
            return Text.from_string(f"plain {input}")

    plain = Plain("plain")
    chunks, output = collect(plain.stream("x"))
    assert not plain.can_stream and chunks == [] and output.content == "plain x"


def test_a_stream_that_breaks_is_transient_and_names_the_provider(model, apis):
    from mediaconduit_worker import TransientError

    apis.script("POST", CHAT, Reply(events=chat_events("gpt-4o-mini", "one two three four"), cut_after=3))
    chunks: list[Any] = []
    with pytest.raises(TransientError) as err:
        collect_into(model.stream("x"), chunks)
    assert chunks == ["one", " two"]
    assert "openai-provider" in str(err.value) and "stream broke" in str(err.value)


def test_a_stream_without_its_done_is_transient(model, apis):
    from mediaconduit_worker import TransientError

    apis.script("POST", CHAT, Reply(events=chat_events("gpt-4o-mini", "cut short")[:-1]))
    with pytest.raises(TransientError, match="ended before its \\[DONE\\]"):
        collect(model.stream("x"))


def test_an_error_inside_a_stream_is_a_clear_error_without_the_key(model, apis):
    from mediaconduit_worker import ProviderResponseError

    error = {"error": {"message": f"overloaded (key {KEYS['openai']})", "type": "server_error"}}
    apis.script("POST", CHAT, Reply(events=[*chat_events("gpt-4o-mini", "partial answer")[:2], error]))
    with pytest.raises(ProviderResponseError) as err:
        collect(model.stream("x"))
    message = str(err.value)
    assert "openai-provider" in message and "failed mid-stream" in message and "overloaded" in message
    assert KEYS["openai"] not in message


def test_a_refusal_before_the_stream_is_the_same_error_as_without_one(model, apis):
    from mediaconduit_worker import ProviderHTTPError, TransientError

    apis.script("POST", CHAT, Reply(503, {"error": {"message": "busy", "type": "server_error"}}, {"Retry-After": "30"}))
    with pytest.raises(TransientError) as busy:
        collect(model.stream("x"))
    assert busy.value.status == 503
    apis.script("POST", CHAT, Reply(400, {"error": {"message": "context too long", "type": "invalid_request_error"}}))
    with pytest.raises(ProviderHTTPError) as refused:
        collect(model.stream("x"))
    assert refused.value.status == 400 and "context too long" in str(refused.value)


def collect_into(stream: Any, chunks: list[Any]) -> Any:
    from mediaconduit_worker import run_stream

    return run_stream(stream, chunks.append)
