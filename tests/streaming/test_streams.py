"""Streamed outputs through the queue: a real worker process and a real Redis, the OpenAI provider talking
to the stand-in's SSE stream; ``transform.stream`` and ``transform.stream_of`` read the chunks back from Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support.remote import QueueWorker
from support.standin_apis import KEYS, Reply, StandInAPIs, chat_events

CHAT = "/openai/v1/chat/completions"
MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def worker(apis: StandInAPIs, urls: dict[str, str]) -> Iterator[QueueWorker]:
    w = QueueWorker("streaming-tests", apis.env(), pool="threads", concurrency=4).wait_ready()
    yield w
    w.stop()


def stream(worker: QueueWorker, input: Any, provider: str, options: dict[str, Any] | None = None) -> Iterator[Any]:
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app

    try:
        return transform.stream(input, provider, MODEL, options, queue=worker.queue, timeout=60)
    finally:
        app.amqp.queues.pop(worker.queue, None)  # as QueueWorker.submit: leave Celery's queue table as it was


def result_of(task_id: str) -> dict[str, Any]:
    from mediaconduit_worker.celery_app import app

    return app.AsyncResult(task_id).get(timeout=30)


def deltas(content: str, pieces: list[str]) -> list[Any]:
    """A stand-in reply streaming ``pieces`` as its deltas (with usage and [DONE])."""
    events = chat_events(MODEL, content)
    head, tail = events[0], events[-3:]
    body = [{**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    return [head, *body, *tail]


def test_chunks_arrive_in_order_and_the_record_is_whole(worker, urls, apis):
    chunks = list(stream(worker, "tell me a story about streams", urls["openai"], {"temperature": 0.5}))

    text = "".join(c.text for c in chunks)
    assert text == f"[{MODEL}] tell me a story about streams"
    assert len(chunks) >= 3 and len({c.task_id for c in chunks}) == 1
    ids = [tuple(int(part) for part in c.id.split("-")) for c in chunks]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    result = result_of(chunks[0].task_id)
    assert result["asset"]["content"] == text
    assert result["asset"]["metadata"]["usage"]["completion_tokens"] == len(text.split())
    assert result["metadata"]["generation_prompt"]["options"] == {"temperature": 0.5}
    (call,) = apis.calls(CHAT)
    assert call.body["stream"] is True


def test_stream_of_resumes_after_a_chunk_id(worker, urls):
    from mediaconduit_worker import transform

    chunks = list(stream(worker, "one two three four five", urls["openai"]))
    again = list(transform.stream_of(chunks[0].task_id, after=chunks[1].id, timeout=30))
    assert [c.text for c in again] == [c.text for c in chunks[2:]] and again[0].id == chunks[2].id


def test_a_secret_split_over_deltas_never_leaves_in_a_chunk(worker, urls, apis):
    secret = "hunter2-correct-horse"
    pieces = ["the pass", "word is hun", "ter2-corr", "ect-horse and ", "the key is sk-proj-", "standin-openai-0123456789", " ok"]
    apis.script("POST", CHAT, Reply(events=deltas("".join(pieces), pieces)))
    chunks = list(stream(worker, "x", urls["openai"], {"password": secret}))

    text = "".join(c.text for c in chunks)
    assert text.startswith("the password is [REDACTED] and the key is ") and text.endswith(" ok")
    assert len(chunks) > 1
    key = KEYS["openai"]
    pieces_of_secrets = {s[i:i + 4] for s in (secret, key) for i in range(len(s) - 3)}
    for chunk in chunks:
        assert not {p for p in pieces_of_secrets if p in chunk.text}, chunk.text


def test_a_stream_broken_after_its_first_chunk_fails_explicitly_and_is_not_retried(worker, urls, apis):
    from mediaconduit_worker import StreamBrokenError

    apis.script("POST", CHAT, Reply(events=chat_events(MODEL, "alpha beta gamma delta epsilon"), cut_after=4))
    seen: list[str] = []
    with pytest.raises(StreamBrokenError) as err:
        for chunk in stream(worker, "x", urls["openai"]):
            seen.append(chunk.text)
    assert "".join(seen).startswith("alpha beta") and "stream broke" in str(err.value)
    with pytest.raises(StreamBrokenError) as stored:
        result_of(chunk.task_id)
    assert "openai-provider" in str(stored.value) and "after" in str(stored.value)
    assert len(apis.calls(CHAT)) == 1  # neither retried nor sent again


def test_a_stream_broken_before_its_first_chunk_is_retried_and_streams_once(worker, urls, apis):
    apis.script("POST", CHAT, Reply(events=chat_events(MODEL, "never seen words"), cut_after=1))
    chunks = list(stream(worker, "second try", urls["openai"]))
    assert "".join(c.text for c in chunks) == f"[{MODEL}] second try"
    assert len(apis.calls(CHAT)) == 2


def test_a_cache_hit_replays_its_output_as_one_chunk(worker, urls, apis):
    first = list(stream(worker, "cache me please", urls["openai"], {"cache": True}))
    second = list(stream(worker, "cache me please", urls["openai"], {"cache": True}))
    assert len(first) > 1 and len(second) == 1
    assert second[0].text == "".join(c.text for c in first)
    assert result_of(second[0].task_id)["metadata"]["cache"]["hit"] is True
    assert len(apis.calls(CHAT)) == 1


def test_a_job_without_a_reader_writes_no_stream(worker, urls, apis):
    from mediaconduit_worker.worker import events
    from mediaconduit_worker.worker.redis_state import state_redis

    sent = worker.submit("nobody reads", urls["openai"], MODEL)
    assert sent.get(timeout=60)["asset"]["content"] == f"[{MODEL}] nobody reads"
    assert not state_redis().exists(events.stream_key(sent.id))
    assert "stream" not in apis.calls(CHAT)[0].body


def test_more_followers_in_one_process_than_a_redis_pool_holds_each_wait():
    """150 threads follow a job that does not end (redis-py's pool holds 100 connections by default): each
    waits its whole timeout in XREAD BLOCK and ends with TimeoutError, none with a pool error."""
    from concurrent.futures import ThreadPoolExecutor

    from mediaconduit_worker import transform

    def follow(_: int) -> str:
        try:
            list(transform.stream_of(f"never-sent-{uuid.uuid4().hex}", timeout=1.5))
        except Exception as exc:  # what each follower ended with is what the test counts
            return type(exc).__name__
        return "ended"

    with ThreadPoolExecutor(150) as pool:
        ends = list(pool.map(follow, range(150)))
    assert ends == ["TimeoutError"] * 150
