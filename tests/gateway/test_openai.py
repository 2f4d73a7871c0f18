"""The OpenAI-compatible surface, through the official ``openai`` client: a real gateway process, a real
worker and Redis, the upstream a local stand-in speaking OpenAI's wire format (SSE included).

The route's candidates are a provider published for this module whose base URL and key are the stand-in's
(so the suite's shared text-to-text worker serves it); the routes file is the default one,
``$MEDIACONDUIT_HOME/routes.yml``, which the gateway and every worker of the suite read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.standin_apis import Reply, StandInAPIs, chat_events

from .conftest import API, GatewayProcess, default_routes_file, publish_standin_chat, wait_finished

openai = pytest.importorskip("openai", reason="the openai package is in the test extras")

CHAT = "/openai/v1/chat/completions"
PRICING = {"prompt": 1e-6, "completion": 2e-6}
BROKEN = "/raw/v1/chat/completions"


@pytest.fixture(scope="module")
def routes(apis: StandInAPIs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Routes ``chat`` (the stand-in) and ``chat-failover`` (a scripted candidate first, then the stand-in), and
    an alias of each."""

    good = publish_standin_chat(tmp_path_factory, "standin-chat", f"{apis.url}/openai/v1")
    scripted = publish_standin_chat(tmp_path_factory, "scripted-chat", f"{apis.url}/raw/v1")
    spec = {"routes": {
        "chat": {"candidates": [{"provider": good, "model": "gpt-4o-mini", "pricing": PRICING}]},
        "chat-failover": {"candidates": [{"provider": scripted, "model": "gpt-4o-mini"},
                                         {"provider": good, "model": "gpt-4o-mini"}]},
    }, "aliases": {"gpt-4o-mini": "chat", "house-model": "chat-failover"}}
    with default_routes_file(spec):
        yield spec


@pytest.fixture(autouse=True)
def _fresh_apis(apis: StandInAPIs) -> None:
    apis.reset()


@pytest.fixture
def client(gateway: GatewayProcess, alice: API, routes, text_worker) -> Iterator[Any]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=alice.key, max_retries=0, timeout=90) as c:
        yield c


def ask(text: str, system: str | None = None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def test_models_are_the_routes_and_their_aliases_never_urls(client, routes):
    models = client.models.list()
    assert [m.id for m in models.data] == sorted([*routes["routes"], *routes["aliases"]])
    assert {m.id: m.route for m in models.data} == {**{r: r for r in routes["routes"]}, **routes["aliases"]}
    assert all("://" not in m.id and m.owned_by == "mediaconduit" for m in models.data)


def test_an_alias_runs_its_route(client, alice, apis):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ask("By alias"))
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini" and completion.choices[0].message.content == "[gpt-4o-mini] By alias"
    job = wait_finished(alice, raw.headers["X-MediaConduit-Job-Id"])
    assert job["provider"] == "route:chat" and job["result"]["metadata"]["candidate"]["index"] == 1
    assert len(apis.calls(CHAT)) == 1
    assert float(raw.headers["X-MediaConduit-Cost-USD"]) == pytest.approx(job["cost_usd"])


def test_a_chat_completion_is_a_job_with_usage_and_its_cost_header(client, alice, apis):
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=ask("Hello there", "Be brief"),
                                                             temperature=0.3, max_tokens=64)
    completion = raw.parse()
    content = "[gpt-4o-mini] Hello there (system: Be brief)"
    assert completion.choices[0].message.content == content and completion.choices[0].finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.model == "chat"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, len(content.split()))
    assert completion.usage.total_tokens == 4 + len(content.split())
    job = wait_finished(alice, raw.headers["X-MediaConduit-Job-Id"])
    assert job["status"] == "succeeded" and job["provider"] == "route:chat"
    assert job["result"]["asset"]["content"] == content
    assert job["cost_usd"] == pytest.approx(4 * PRICING["prompt"] + len(content.split()) * PRICING["completion"])
    assert float(raw.headers["X-MediaConduit-Cost-USD"]) == pytest.approx(job["cost_usd"])
    (call,) = apis.calls(CHAT)
    assert call.body["temperature"] == 0.3 and call.body["max_tokens"] == 64


def test_a_streamed_chat_completion_arrives_in_chunks_then_usage(client, alice):
    chunks = list(client.chat.completions.create(model="chat", messages=ask("one two three four five six"),
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[gpt-4o-mini] one two three four five six"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text.split())
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    job = wait_finished(alice, chunks[0].id.removeprefix("chatcmpl-"))
    assert job["status"] == "succeeded" and job["result"]["asset"]["content"] == text


def test_a_stream_that_breaks_mid_way_ends_with_an_error_the_client_raises(client, apis):
    apis.script("POST", CHAT, Reply(events=chat_events("gpt-4o-mini", "alpha beta gamma delta epsilon"), cut_after=4))
    seen: list[str] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(model="chat", messages=ask("x"), stream=True):
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen).startswith("alpha beta") and "stream broke" in str(err.value)
    assert len(apis.calls(CHAT)) == 1


def test_a_stream_broken_before_its_first_chunk_fails_over_to_the_next_candidate(client, alice, apis):
    apis.script("POST", BROKEN, Reply(events=chat_events("gpt-4o-mini", "never seen"), cut_after=1))
    chunks = list(client.chat.completions.create(model="chat-failover", messages=ask("failed over"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "[gpt-4o-mini] failed over"
    job = wait_finished(alice, chunks[0].id.removeprefix("chatcmpl-"))
    attempts = job["result"]["metadata"]["attempts"]
    assert [(a["candidate"], a["error"]) for a in attempts] == [(1, "TransientError"), (2, None)]
    assert len(apis.calls(BROKEN)) == 1 and len(apis.calls(CHAT)) == 1


def test_a_client_that_leaves_mid_stream_leaves_the_job_to_finish(gateway, alice, apis, routes, text_worker):
    words = " ".join(f"w{k}" for k in range(30))
    apis.script("POST", CHAT, Reply(events=chat_events("gpt-4o-mini", words), event_delay=0.05))
    body = {"model": "chat", "messages": ask("x"), "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {alice.key}"}) as reply:
        job_id = reply.headers["X-MediaConduit-Job-Id"]
        lines = reply.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
    assert '"role":"assistant"' in first
    job = wait_finished(alice, job_id)
    assert job["status"] == "succeeded" and job["result"]["asset"]["content"] == words


def test_errors_come_in_openais_shape(client, gateway, routes):
    with pytest.raises(openai.AuthenticationError) as bad_key:
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="mc_not-a-key", max_retries=0).models.list()
    assert bad_key.value.body["type"] == "authentication_error" and bad_key.value.body["code"] == "invalid_api_key"
    for model in ("no-such-route", "https://github.com/tests/anything"):
        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(model=model, messages=ask("x"))
        assert unknown.value.body["code"] == "model_not_found" and unknown.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as turns:
        client.chat.completions.create(model="chat", messages=[*ask("a"), {"role": "assistant", "content": "b"}])
    assert turns.value.body["param"] == "messages[1]"
    with pytest.raises(openai.BadRequestError) as option:
        client.chat.completions.create(model="chat", messages=ask("x"), temperature=7)
    assert "temperature" in option.value.message
    raw = httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{", timeout=10,
                     headers={"Authorization": f"Bearer {client.api_key}"})
    assert raw.status_code == 400 and set(raw.json()["error"]) == {"message", "type", "param", "code"}
