"""The SDK's HTTP layer (mediaconduit_worker.http) and remote-provider plumbing, called directly.

The other end is the local stand-in server of tests/support/standin_apis.py (its /raw routes answer only
with replies scripted here), so every case is real HTTP over a socket: status codes, headers,
bodies, streams, slow answers and refused connections.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from conftest import free_port
from support.standin_apis import Reply, StandInAPIs

from mediaconduit_worker import ConfigurationError, InvalidInputError, RemoteProvider, TransientError
from mediaconduit_worker.chat import ChatOptions, cost_metadata
from mediaconduit_worker.http import (
    HttpClient,
    ProviderHTTPError,
    ProviderResponseError,
    api_error_message,
    fail_fast,
    parse_retry_after,
)

SECRET = "sk-unit-test-secret-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[StandInAPIs]:
    s = StandInAPIs().start()
    yield s
    s.stop()


@pytest.fixture
def apis(server: StandInAPIs) -> StandInAPIs:
    server.reset()
    return server


@pytest.fixture
def client(apis: StandInAPIs) -> Iterator[HttpClient]:
    c = HttpClient("unit-provider", f"{apis.url}/raw/api", auth_headers={"Authorization": f"Bearer {SECRET}"},
                   timeout=5, max_retries=2, backoff=0.05, auth_hint="check UNIT_API_KEY")
    yield c
    c.close()


class UnitProvider(RemoteProvider):
    id = "unit-provider"
    config_env = {"api_key": "UNIT_API_KEY", "base_url": "UNIT_BASE_URL"}
    default_base_url = "https://api.unit.invalid/v1"


def test_missing_key_names_provider_and_variable(monkeypatch):
    monkeypatch.delenv("UNIT_API_KEY", raising=False)
    provider = UnitProvider()
    with pytest.raises(ConfigurationError, match=r"provider 'unit-provider' has no API key: set UNIT_API_KEY"):
        provider.ensure_configured()
    monkeypatch.setenv("UNIT_API_KEY", SECRET)
    assert UnitProvider().api_key() == SECRET
    configured = UnitProvider()
    configured.configure({"api_key": "sk-from-configure-000000"})
    assert configured.api_key() == "sk-from-configure-000000"
    assert configured.base_url == "https://api.unit.invalid/v1"
    assert SECRET not in repr(configured.http) and "sk-from-configure" not in repr(configured.http)


def test_success_sends_auth_and_decodes_json(client, apis):
    apis.script("POST", "/raw/api/things", Reply(200, {"ok": True}))
    assert client.post_json("/things", {"a": 1}) == {"ok": True}
    (call,) = apis.calls("/raw/api/things")
    assert call.headers["authorization"] == f"Bearer {SECRET}" and call.body == {"a": 1}


def test_401_is_permanent_names_provider_status_and_api_message_without_the_key(client, apis):
    apis.script("GET", "/raw/api/models", Reply(401, {"error": {"message": f"Incorrect API key provided: {SECRET}",
                                                                "type": "invalid_request_error"}}))
    with pytest.raises(ProviderHTTPError) as err:
        client.get_json("/models")
    assert err.value.status == 401
    assert str(err.value) == ("unit-provider: GET /models failed with HTTP 401 Unauthorized: invalid_request_error: "
                              "Incorrect API key provided: [REDACTED] (check UNIT_API_KEY)")
    assert len(apis.calls("/raw/api/models")) == 1  # not retried


def test_429_then_success_honours_retry_after_seconds(client, apis):
    apis.script("GET", "/raw/api/x", Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "1"}),
                Reply(200, {"n": 2}))
    started = time.monotonic()
    assert client.get_json("/x") == {"n": 2}
    assert time.monotonic() - started >= 0.95
    first, second = apis.calls("/raw/api/x")
    assert second.at - first.at >= 0.95


def test_retry_after_as_http_date_is_honoured(client, apis):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    apis.script("GET", "/raw/api/d", Reply(503, "busy", headers={"Retry-After": when}), Reply(200, {"ok": 1}))
    started = time.monotonic()
    assert client.get_json("/d") == {"ok": 1}
    assert 0.9 <= time.monotonic() - started <= 4


def test_parse_retry_after_forms():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "7"}, now) == 7
    assert parse_retry_after({"retry-after": "Wed, 01 Jan 2025 12:00:30 GMT"}, now) == 30
    assert parse_retry_after({"retry-after": "Wed, 01 Jan 2025 11:00:00 GMT"}, now) == 0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}, now) == 0.25
    assert parse_retry_after({"retry-after": "soon"}, now) is None
    assert parse_retry_after({}, now) is None


def test_long_retry_after_goes_straight_back_to_the_queue(client, apis):
    apis.script("POST", "/raw/api/chat", Reply(429, {"error": {"message": "quota"}}, headers={"Retry-After": "120"}))
    started = time.monotonic()
    with pytest.raises(TransientError) as err:
        client.post_json("/chat", {})
    assert err.value.retry_after == 120 and time.monotonic() - started < 5
    assert "HTTP 429" in str(err.value) and "quota" in str(err.value)


def test_persistent_5xx_becomes_transient_after_in_process_retries(client, apis):
    busy = Reply(502, "<html>bad gateway</html>")
    apis.script("GET", "/raw/api/y", busy, busy, busy)
    with pytest.raises(TransientError) as err:
        client.get_json("/y")
    assert len(apis.calls("/raw/api/y")) == 3 and err.value.retry_after is not None
    assert "unit-provider: GET /y failed with HTTP 502 Bad Gateway" in str(err.value)


def test_fail_fast_hands_back_the_first_transient_failure_with_its_status(client, apis):
    """A route tries its next candidate at once: no retry in the client, the status kept for the record."""
    busy = Reply(503, {"error": {"message": "overloaded"}})
    apis.script("GET", "/raw/api/f", busy, busy, busy, busy)
    with fail_fast(), pytest.raises(TransientError) as err:
        client.get_json("/f")
    assert len(apis.calls("/raw/api/f")) == 1 and err.value.status == 503
    with pytest.raises(TransientError):
        client.get_json("/f")  # outside the block the client retries again
    assert len(apis.calls("/raw/api/f")) == 4


def test_malformed_json_is_a_clear_error(client, apis):
    apis.script("GET", "/raw/api/m", Reply(200, raw=b'{"data": [1, 2', headers={"Content-Type": "application/json"}))
    with pytest.raises(ProviderResponseError, match=r"unit-provider: GET /m returned malformed JSON \(HTTP 200"):
        client.get_json("/m")


def test_timeout_is_transient_and_names_the_request(apis):
    slow = HttpClient("unit-provider", f"{apis.url}/raw/api", timeout=0.5)
    apis.script("GET", "/raw/api/slow", Reply(200, {"late": True}, delay=2))
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"unit-provider: GET /slow timed out after 0.5s"):
        slow.get_json("/slow")
    assert time.monotonic() - started < 1.9
    slow.close()


def test_a_request_never_outlives_the_jobs_deadline(client, apis):
    """Under a job's deadline the per-request timeout is min(configured, remaining): a hung API ends with a
    TimeLimitError naming the job, and a retry that would not fit is handed back to the queue instead."""
    from mediaconduit_worker import TimeLimitError
    from mediaconduit_worker.deadline import deadline

    apis.script("GET", "/raw/api/hung", Reply(200, {}, delay=30))
    started = time.monotonic()
    with deadline(0.5, "provider 'unit-provider' model 'm'"), pytest.raises(TimeLimitError) as err:
        client.get_json("/hung")  # the client's own timeout is 5 s
    assert time.monotonic() - started < 2
    assert str(err.value) == "provider 'unit-provider' model 'm' exceeded the job's time limit of 0.5s (during GET /hung)"
    with deadline(0.0, "provider 'unit-provider' model 'm'"), pytest.raises(TimeLimitError):
        client.get_json("/never-sent")
    assert apis.calls("/raw/api/never-sent") == []
    apis.script("GET", "/raw/api/limited", Reply(429, {"error": "slow down"}, headers={"Retry-After": "2"}))
    with deadline(1.0, "provider 'unit-provider' model 'm'"), pytest.raises(TransientError) as busy:
        client.get_json("/limited")
    assert busy.value.retry_after == 2 and len(apis.calls("/raw/api/limited")) == 1


def test_refused_connection_is_transient_after_retries():
    port = free_port()  # nothing listens there
    c = HttpClient("unit-provider", f"http://127.0.0.1:{port}", max_retries=1, backoff=0.01)
    with pytest.raises(TransientError, match=r"unit-provider: cannot reach http://127.0.0.1:\d+ \(GET /z\)"):
        c.get_json("/z")


def test_ndjson_stream_yields_objects_and_fails_on_an_error_line(client, apis):
    apis.script("POST", "/raw/api/pull", Reply(200, lines=[{"status": "a"}, {"status": "b", "completed": 1}]))
    assert [x["status"] for x in client.stream_ndjson("POST", "/raw/api/pull".removeprefix("/raw/api"))] == ["a", "b"]
    apis.script("POST", "/raw/api/pull", Reply(200, lines=[{"status": "pulling manifest"},
                                                           {"error": "pull model manifest: file does not exist"}]))
    seen = []
    with pytest.raises(ProviderResponseError, match=r"unit-provider: pulling x failed: pull model manifest: file does not exist"):
        for item in client.stream_ndjson("POST", "/pull", what="pulling x"):
            seen.append(item)
    assert seen == [{"status": "pulling manifest"}]
    apis.script("POST", "/raw/api/pull", Reply(200, lines=["{not json"]))
    with pytest.raises(ProviderResponseError, match="malformed JSON line"):
        list(client.stream_ndjson("POST", "/pull"))


def test_stream_error_status_is_reported_like_any_other(client, apis):
    apis.script("POST", "/raw/api/pull", Reply(404, {"error": "model not found"}))
    with pytest.raises(ProviderHTTPError, match=r"HTTP 404 Not Found: model not found"):
        list(client.stream_ndjson("POST", "/pull"))


def test_auth_headers_only_go_to_the_apis_own_host(client, apis):
    apis.script("GET", "/raw/cdn/file.png", Reply(200, raw=b"\x89PNG...", headers={"Content-Type": "image/png"}))
    data, ctype = client.download(f"{apis.url}/raw/cdn/file.png")
    assert data == b"\x89PNG..." and ctype == "image/png"
    assert "authorization" not in apis.calls("/raw/cdn/file.png")[0].headers
    apis.script("GET", "/raw/api/own.png", Reply(200, raw=b"x"))
    client.download(f"{apis.url}/raw/api/own.png")
    assert apis.calls("/raw/api/own.png")[0].headers["authorization"] == f"Bearer {SECRET}"


CREDENTIALS = {"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET, "xi-api-key": SECRET, "api-key": SECRET,
               "Cookie": f"session={SECRET}", "Proxy-Authorization": f"Basic {SECRET}", "X-Vendor-Token": SECRET}


@pytest.fixture(scope="module")
def other_origin() -> Iterator[StandInAPIs]:
    """A second stand-in on another loopback port: another origin, which records what it receives."""
    s = StandInAPIs().start()
    yield s
    s.stop()


def test_a_redirect_to_another_origin_drops_every_credential_header(apis, other_origin):
    c = HttpClient("unit-provider", f"{apis.url}/raw/api", auth_headers=CREDENTIALS, timeout=5)
    other_origin.reset()
    other_origin.script("GET", "/raw/elsewhere/file.png", Reply(200, raw=b"png"))
    apis.script("GET", "/raw/api/file.png", Reply(302, headers={"Location": f"{other_origin.url}/raw/elsewhere/file.png"}))
    data, _ = c.request_bytes("GET", "/file.png")
    assert data == b"png"
    assert apis.calls("/raw/api/file.png")[0].headers["x-api-key"] == SECRET  # the API itself got them
    received = other_origin.calls("/raw/elsewhere/file.png")[0].headers
    assert not {name.lower() for name in CREDENTIALS} & set(received), received
    assert SECRET not in str(received)
    c.close()


def test_a_redirect_within_the_origin_keeps_the_credentials(apis):
    c = HttpClient("unit-provider", f"{apis.url}/raw/api", auth_headers=CREDENTIALS, timeout=5)
    apis.script("GET", "/raw/api/old", Reply(307, headers={"Location": "/raw/api/new"}))
    apis.script("GET", "/raw/api/new", Reply(200, {"ok": True}))
    assert c.get_json("/old") == {"ok": True}
    assert apis.calls("/raw/api/new")[0].headers["xi-api-key"] == SECRET
    c.close()


def test_a_redirect_loop_ends_with_a_clear_error(client, apis):
    apis.script("GET", "/raw/api/loop", *[Reply(302, headers={"Location": "/raw/api/loop"})] * 12)
    with pytest.raises(ProviderResponseError, match="GET /loop redirected more than 10 times"):
        client.get_json("/loop")


@pytest.mark.parametrize("body, message", [
    ({"error": {"message": "bad key", "type": "invalid_request_error"}}, "invalid_request_error: bad key"),
    ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "overloaded_error: Overloaded"),
    ({"error": {"code": 402, "message": "Insufficient credits"}}, "Insufficient credits"),
    ({"error": "model 'x' not found"}, "model 'x' not found"),
    ({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, "Invalid API key"),
    ({"detail": [{"loc": ["body", "text"], "msg": "field required"}]}, "field required"),
    ("plain text failure", "plain text failure"),
])
def test_api_error_message_shapes(body, message):
    assert api_error_message(body) == message


def test_chat_options_validation_and_mapping():
    opts = ChatOptions.parse({"systemPrompt": "s", "temperature": 1, "maxOutputTokens": 5, "topP": 0.5,
                              "responseFormat": {"type": "object"}, "stop": "X"})
    assert opts.openai_params() == {"temperature": 1.0, "max_tokens": 5, "top_p": 0.5, "stop": ["X"],
                                    "response_format": {"type": "object"}}
    schema = ChatOptions.parse({"responseFormat": {"properties": {"a": {"type": "string"}}}}).response_format
    assert schema == {"type": "json_schema", "json_schema": {"name": "response", "schema": {"properties": {"a": {"type": "string"}}}}}
    for bad in ({"temperature": 3}, {"topP": "high"}, {"maxOutputTokens": 0}, {"systemPrompt": 1}, {"responseFormat": "xml"}):
        with pytest.raises(InvalidInputError):
            ChatOptions.parse(bad)


def test_cost_prefers_the_apis_figure_then_pricing():
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    pricing = {"prompt": 1e-6, "completion": 2e-6}
    assert cost_metadata(usage, pricing, reported=0.5) == {"total": 0.5, "currency": "USD", "source": "api"}
    assert cost_metadata(usage, pricing) == {"total": 0.002, "currency": "USD", "source": "pricing"}
    assert cost_metadata(usage, None) is None and cost_metadata(None, pricing) is None
