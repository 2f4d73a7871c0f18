"""Each streaming provider through the queue: a real worker process and a real Redis, the provider talking to
the stand-in's stream in its API's documented wire format (Anthropic's Messages event stream, Ollama's NDJSON,
OpenRouter's SSE with its ``: OPENROUTER PROCESSING`` comments). ``transform.stream`` reads the chunks back from
Redis; the same job without a reader is the non-streaming call the streamed record must equal."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.remote import QueueWorker
from support.standin_apis import (
    KEYS,
    PROCESSING,
    Reply,
    StandInAPIs,
    anthropic_error_event,
    anthropic_events,
    chat_events,
    ollama_lines,
    openrouter_error_chunk,
)


@dataclass(frozen=True)
class Streamer:
    """A provider under test: its published name, a model, the path it streams from, and how the stand-in
    streams a reply in its format."""

    name: str
    model: str
    path: str
    reply_of: Callable[[str, str, int | None], Reply]

    def reply(self, words: str, cut_after: int | None = None) -> Reply:
        """A reply streaming ``words``, its connection cut after ``cut_after`` events or lines."""
        return self.reply_of(self.model, words, cut_after)


ANTHROPIC = Streamer("anthropic", "claude-haiku-4-5", "/anthropic/v1/messages",
                     lambda model, words, cut: Reply(events=anthropic_events(model, words), cut_after=cut))
OLLAMA = Streamer("ollama", "llama3.2:latest", "/ollama/api/generate",
                  lambda model, words, cut: Reply(lines=ollama_lines(model, words), cut_after=cut))
OPENROUTER = Streamer("openrouter", "openai/gpt-4o-mini", "/openrouter/api/v1/chat/completions",
                      lambda model, words, cut: Reply(events=[PROCESSING, *chat_events(model, words)], cut_after=cut))
STREAMERS = [ANTHROPIC, OLLAMA, OPENROUTER]


@pytest.fixture(scope="module")
def routes_file(tmp_path_factory: pytest.TempPathFactory, urls: dict[str, str]) -> Path:
    """Route ``stream-failover``: Anthropic first, then OpenAI."""
    path = tmp_path_factory.mktemp("routes") / "routes.yml"
    path.write_text(yaml.safe_dump({"routes": {"stream-failover": {"candidates": [
        {"provider": urls["anthropic"], "model": ANTHROPIC.model},
        {"provider": urls["openai"], "model": "gpt-4o-mini"},
    ]}}}))
    return path


@pytest.fixture(scope="module")
def worker(apis: StandInAPIs, urls: dict[str, str], routes_file: Path) -> Iterator[QueueWorker]:
    w = QueueWorker(f"provider-streams-{uuid.uuid4().hex[:6]}", {**apis.env(), "MEDIACONDUIT_ROUTES": str(routes_file)},
                    pool="threads", concurrency=4).wait_ready()
    yield w
    w.stop()


def stream(worker: QueueWorker, input: Any, provider: str, model: str | None,
           options: dict[str, Any] | None = None) -> Iterator[Any]:
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app

    try:
        return transform.stream(input, provider, model, options, queue=worker.queue, timeout=60)
    finally:
        app.amqp.queues.pop(worker.queue, None)  # as QueueWorker.submit: leave Celery's queue table as it was


def result_of(task_id: str) -> dict[str, Any]:
    from mediaconduit_worker.celery_app import app

    return app.AsyncResult(task_id).get(timeout=30)


def without_timing(result: dict[str, Any]) -> dict[str, Any]:
    """A record's asset metadata (usage, cost, finish reason) and generation prompt, less what differs between
    two runs of one call."""
    def prompt(p: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in p.items() if k not in ("processing_time", "timestamp")}

    return {"asset": result["asset"]["metadata"], "prompt": prompt(result["metadata"]["generation_prompt"])}


@pytest.mark.parametrize("streamer", STREAMERS, ids=lambda s: s.name)
def test_a_provider_streams_chunks_whose_join_is_the_record_identical_to_the_plain_call(worker, urls, apis, streamer):
    opts = {"systemPrompt": "Be brief", "temperature": 0.2}
    chunks = list(stream(worker, "tell me a story about rivers", urls[streamer.name], streamer.model, opts))
    plain = worker.run("tell me a story about rivers", urls[streamer.name], streamer.model, opts)

    text = "".join(c.text for c in chunks)
    assert len(chunks) > 1 and len({c.task_id for c in chunks}) == 1
    streamed = result_of(chunks[0].task_id)
    assert streamed["asset"]["content"] == text == plain["asset"]["content"]
    assert without_timing(streamed) == without_timing(plain)
    assert streamed["asset"]["metadata"]["usage"]["completion_tokens"] > 0
    sent, unstreamed = (call.body for call in apis.calls(streamer.path))
    assert sent["stream"] is True and not unstreamed.get("stream")


@pytest.mark.parametrize("streamer", STREAMERS, ids=lambda s: s.name)
def test_a_stream_broken_after_its_first_chunk_fails_with_stream_broken(worker, urls, apis, streamer):
    from mediaconduit_worker import StreamBrokenError

    apis.script("POST", streamer.path, streamer.reply("alpha beta gamma delta epsilon zeta", cut_after=6))
    seen: list[str] = []
    with pytest.raises(StreamBrokenError) as err:
        for chunk in stream(worker, "x", urls[streamer.name], streamer.model):
            seen.append(chunk.text)
    assert "".join(seen).startswith("alpha") and "stream broke" in str(err.value)
    with pytest.raises(StreamBrokenError) as stored:
        result_of(chunk.task_id)
    assert f"{streamer.name}-provider" in str(stored.value)
    assert len(apis.calls(streamer.path)) == 1  # neither retried nor sent again


@pytest.mark.parametrize("streamer", STREAMERS, ids=lambda s: s.name)
def test_a_stream_broken_before_its_first_chunk_is_retried_and_streams_once(worker, urls, apis, streamer):
    apis.script("POST", streamer.path, streamer.reply("never seen words", cut_after=1))
    chunks = list(stream(worker, "second try", urls[streamer.name], streamer.model))
    assert "".join(c.text for c in chunks) == f"[{streamer.model}] second try"
    assert len(apis.calls(streamer.path)) == 2


def test_an_anthropic_error_event_names_the_provider_and_never_the_key(worker, urls, apis):
    error = anthropic_error_event("invalid_request_error", f"prompt is too long (key {KEYS['anthropic']})")
    apis.script("POST", ANTHROPIC.path, Reply(events=[*anthropic_events(ANTHROPIC.model, "x")[:2], error]))
    with pytest.raises(Exception) as err:
        list(stream(worker, "x", urls["anthropic"], ANTHROPIC.model))
    message = str(err.value)
    assert type(err.value).__name__ == "ProviderResponseError"
    assert "anthropic-provider" in message and "invalid_request_error: prompt is too long" in message
    assert KEYS["anthropic"] not in message
    assert len(apis.calls(ANTHROPIC.path)) == 1  # a permanent error: not retried


def test_an_overloaded_event_before_the_first_chunk_fails_over_to_the_next_candidate(worker, urls, apis,
                                                                                      monkeypatch, routes_file):
    from mediaconduit_worker.settings import get_settings

    monkeypatch.setenv("MEDIACONDUIT_ROUTES", str(routes_file))
    get_settings.cache_clear()
    try:
        apis.script("POST", ANTHROPIC.path, Reply(events=[*anthropic_events(ANTHROPIC.model, "x")[:3],
                                                          anthropic_error_event()]))
        chunks = list(stream(worker, "failed over", "route:stream-failover", None))
    finally:
        get_settings.cache_clear()
    assert "".join(c.text for c in chunks) == "[gpt-4o-mini] failed over"
    attempts = result_of(chunks[0].task_id)["metadata"]["attempts"]
    assert [(a["candidate"], a["error"]) for a in attempts] == [(1, "TransientError"), (2, None)]
    assert "overloaded_error" in attempts[0]["message"] and "anthropic-provider" in attempts[0]["message"]
    assert len(apis.calls(ANTHROPIC.path)) == 1 and len(apis.calls("/openai/v1/chat/completions")) == 1


def test_an_ollama_error_line_names_the_provider(worker, urls, apis):
    apis.script("POST", OLLAMA.path, Reply(lines=[{"error": "an error was encountered while running the model: "
                                                            "unexpected EOF"}]))
    with pytest.raises(Exception) as err:
        list(stream(worker, "x", urls["ollama"], OLLAMA.model))
    assert type(err.value).__name__ == "ProviderResponseError"
    assert "ollama-provider" in str(err.value) and "unexpected EOF" in str(err.value)
    assert len(apis.calls(OLLAMA.path)) == 1  # a permanent error: not retried


def test_an_ollama_stream_that_ends_without_its_done_line_is_broken_not_complete(worker, urls, apis):
    from mediaconduit_worker import StreamBrokenError

    apis.script("POST", OLLAMA.path, Reply(lines=ollama_lines(OLLAMA.model, "cut short")[:-1]))
    with pytest.raises(StreamBrokenError) as err:
        list(stream(worker, "x", urls["ollama"], OLLAMA.model))
    assert "ollama-provider" in str(err.value) and "ended before its done line" in str(err.value)


def test_an_openrouter_error_chunk_names_the_provider_and_never_the_key(worker, urls, apis):
    error = openrouter_error_chunk(OPENROUTER.model, "server_error", f"Provider disconnected (key {KEYS['openrouter']})")
    apis.script("POST", OPENROUTER.path, Reply(events=[PROCESSING, chat_events(OPENROUTER.model, "x")[0], error]))
    with pytest.raises(Exception) as err:
        list(stream(worker, "x", urls["openrouter"], OPENROUTER.model))
    message = str(err.value)
    assert type(err.value).__name__ == "ProviderResponseError"
    assert "openrouter-provider" in message and "server_error: Provider disconnected" in message
    assert KEYS["openrouter"] not in message


def test_an_error_event_after_the_first_chunk_reaches_the_reader_and_ends_the_job_with_it(worker, urls, apis):
    from mediaconduit_worker import StreamBrokenError

    events = anthropic_events(ANTHROPIC.model, "alpha beta gamma delta")
    error = anthropic_error_event("invalid_request_error", "output blocked by policy")
    apis.script("POST", ANTHROPIC.path, Reply(events=[*events[:6], error]))
    seen: list[str] = []
    with pytest.raises(StreamBrokenError) as err:
        for chunk in stream(worker, "x", urls["anthropic"], ANTHROPIC.model):
            seen.append(chunk.text)
    assert "".join(seen) == "alpha beta gamma"  # each delta the model yielded, the held one included
    assert "ProviderResponseError" in str(err.value) and "output blocked by policy" in str(err.value)
    with pytest.raises(Exception) as stored:
        result_of(chunk.task_id)
    assert type(stored.value).__name__ == "ProviderResponseError" and "anthropic-provider" in str(stored.value)
    assert len(apis.calls(ANTHROPIC.path)) == 1
