"""A job's event stream, written by real workers into a real Redis: its status events in order, the final one
for jobs that never ran, errors scrubbed of secrets, the cap and TTL, and the hand-off to the webhook outbox."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest


def send(*args: Any, **options: Any) -> Any:
    """A transform job whose event stream has a reader, as the gateway sends every job."""
    from mediaconduit_worker import transform
    from mediaconduit_worker.worker.headers import EVENTS_HEADER

    return transform.apply_async(args, headers={EVENTS_HEADER: True}, **options)


def _client() -> Any:
    from mediaconduit_worker.worker.redis_state import state_redis

    return state_redis()


def entries(task_id: str, timeout: float = 60) -> list[tuple[str, str, dict[str, Any]]]:
    """The job's events once its final status is there: (stream id, type, data)."""
    from mediaconduit_worker.worker.events import FINAL, stream_key

    deadline = time.monotonic() + timeout
    while True:
        got = [(i, f["event"], json.loads(f["data"])) for i, f in _client().xrange(stream_key(task_id))]
        if any(kind == "status" and data["status"] in FINAL for _, kind, data in got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def statuses(task_id: str) -> list[str]:
    return [data["status"] for _, kind, data in entries(task_id) if kind == "status"]


def test_a_job_runs_then_succeeds_and_its_result_is_stored_before_the_event(text_worker, echo_url) -> None:
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.events import stream_key

    job = send("hello", echo_url, "upper")
    client = _client()
    seen: list[str] = []
    for _ in range(1200):  # as a reader does: the moment it sees "succeeded", the result is there
        got = [json.loads(f["data"]).get("status", f["event"]) for _, f in client.xrange(stream_key(job.id))]
        if "succeeded" in got:
            assert app.backend.get_state(job.id) == "SUCCESS"
            seen = got
            break
        time.sleep(0.05)
    assert seen == ["running", "output", "succeeded"]
    got = entries(job.id)
    assert [(kind, data) for _, kind, data in got] == [("status", {"status": "running", "attempt": 0}),
                                                      ("output", {"chunk": "HELLO"}), ("status", {"status": "succeeded"})]
    ids = [i for i, _, _ in got]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    ttl = client.ttl(stream_key(job.id))
    assert 0 < ttl <= 86400
    assert job.get(timeout=60)["asset"]["content"] == "HELLO"


def test_a_job_whose_stream_has_no_reader_writes_no_events(text_worker, echo_url) -> None:
    from mediaconduit_worker import transform
    from mediaconduit_worker.worker.events import stream_key

    job = transform.delay("hello", echo_url, "upper")
    assert job.get(timeout=60)["asset"]["content"] == "HELLO"
    assert not _client().exists(stream_key(job.id))


def test_a_failure_names_the_culprit_and_never_its_secret(text_worker, make_provider) -> None:

    code = (
        "from mediaconduit_worker import MediaCapability, MediaProvider, TextToTextModel\n"
        "class Model(TextToTextModel):\n"
        "    def transform(self, input, options=None):\n"
        "        raise ValueError(f\"model 'leaky' refused the key {options['api_key']} and the hint {options['hint']}\")\n"
        "class Leaky(MediaProvider):\n"
        "    model_classes = {MediaCapability.TEXT_TO_TEXT: Model}\n"
    )
    manifest = {"id": "leaky", "name": "Leaky", "capabilities": ["text-to-text"], "main": "provider.py",
                "models": [{"id": "leaky"}]}
    url = make_provider("leaky", manifest, {"provider.py": code})
    secret, shaped = "hunter2-not-a-shape-0042", "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    job = send("x", url, "leaky", {"api_key": secret, "hint": shaped})
    got = entries(job.id)
    assert [d["status"] for _, k, d in got if k == "status"] == ["running", "failed"]
    error = got[-1][2]["error"]
    with pytest.raises(Exception) as stored:  # the event shows the error the result backend stores
        job.get(timeout=10)
    assert error == {"type": type(stored.value).__name__, "message": str(stored.value)}
    assert "leaky" in error["message"] and "refused the key" in error["message"]
    raw = json.dumps(got)
    assert secret not in raw and shaped not in raw


def test_a_job_cancelled_before_it_runs_gets_its_final_event(echo_url) -> None:
    from mediaconduit_worker.celery_app import app

    job = send("never", echo_url, "echo", queue=f"nobody-{uuid.uuid4().hex[:8]}")
    app.control.revoke(job.id, reason="the tenant asked")
    got = entries(job.id, timeout=10)
    assert [(k, d) for _, k, d in got] == [("status", {"status": "canceled", "reason": "the tenant asked"})]


def test_a_job_past_its_start_by_ends_expired_on_the_worker_that_takes_it(text_worker, echo_url) -> None:

    job = send("late", echo_url, "echo", start_by=datetime.now(UTC) - timedelta(seconds=1))
    assert statuses(job.id) == ["expired"]
    assert "not started by" in entries(job.id)[0][2]["reason"]


def test_a_job_cancelled_while_running_ends_canceled(text_worker, make_provider) -> None:
    from mediaconduit_worker.celery_app import app

    code = (
        "import time\n"
        "from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel\n"
        "class Model(TextToTextModel):\n"
        "    def transform(self, input, options=None):\n"
        "        time.sleep(60)\n"
        "        return Text.from_string('too late')\n"
        "class Slow(MediaProvider):\n"
        "    model_classes = {MediaCapability.TEXT_TO_TEXT: Model}\n"
    )
    manifest = {"id": "slow", "name": "Slow", "capabilities": ["text-to-text"], "main": "provider.py",
                "models": [{"id": "slow"}]}
    job = send("x", make_provider("slow", manifest, {"provider.py": code}), "slow")
    from mediaconduit_worker.worker.events import stream_key

    for _ in range(1200):
        if _client().xlen(stream_key(job.id)):
            break
        time.sleep(0.05)
    app.control.revoke(job.id, reason="stop it")
    assert statuses(job.id) == ["running", "canceled"]


def test_a_transient_error_shows_the_job_queued_again_then_running(text_worker, make_provider, tmp_path) -> None:

    calls = tmp_path / "calls"
    code = (
        "from pathlib import Path\n"
        "from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, TransientError\n"
        "class Model(TextToTextModel):\n"
        "    def transform(self, input, options=None):\n"
        f"        calls = Path({str(calls)!r})\n"
        "        first = not calls.exists()\n"
        "        calls.write_text('x')\n"
        "        if first:\n"
        "            raise TransientError('the flaky API answered 503')\n"
        "        return Text.from_string('second time lucky')\n"
        "class Flaky(MediaProvider):\n"
        "    model_classes = {MediaCapability.TEXT_TO_TEXT: Model}\n"
    )
    manifest = {"id": "flaky", "name": "Flaky", "capabilities": ["text-to-text"], "main": "provider.py",
                "models": [{"id": "flaky"}]}
    job = send("x", make_provider("flaky", manifest, {"provider.py": code}), "flaky")
    assert job.get(timeout=60)["asset"]["content"] == "second time lucky"
    got = [d for _, k, d in entries(job.id) if k == "status"]
    assert [d["status"] for d in got] == ["running", "queued", "running", "succeeded"]
    assert got[1]["retry"] == 1 and "503" in got[1]["reason"]["message"] and got[2]["attempt"] == 1


# -- the writer itself, on the real Redis ---------------------------------------------------------------
@pytest.fixture
def task_id() -> str:
    return f"t-{uuid.uuid4().hex}"


def _outbox_since(start: str) -> list[dict[str, str]]:
    from mediaconduit_worker.worker.events import OUTBOX

    return [f for _, f in _client().xrange(OUTBOX, min=f"({start}")]


def _outbox_end() -> str:
    from mediaconduit_worker.worker.events import OUTBOX

    last = _client().xrevrange(OUTBOX, count=1)
    return last[0][0] if last else "0-0"


@pytest.mark.parametrize("filter_text, sent", [
    (None, ["start", "output", "logs", "completed"]),
    ("", ["start", "output", "logs", "completed"]),
    ('["completed"]', ["completed"]),
    ("start,completed", ["start", "completed"]),
    ('["output", "logs"]', ["output", "logs"]),
])
def test_a_webhooks_filter_chooses_what_goes_to_the_outbox(task_id, filter_text, sent) -> None:
    from mediaconduit_worker.worker import events

    client = _client()
    hook = {"url": "http://127.0.0.1:9/hook", "tenant": "acme"}
    if filter_text is not None:
        hook["events"] = filter_text
    client.hset(events.WEBHOOK_PREFIX + task_id, mapping=hook)
    start = _outbox_end()
    ids = [events.status(task_id, events.RUNNING, attempt=0), events.add(task_id, events.PROGRESS, {"done": 1, "total": 2}),
           events.add(task_id, events.OUTPUT, {"chunk": "Hel"}), events.add(task_id, events.LOG, {"line": "halfway"}),
           events.status(task_id, events.SUCCEEDED)]
    mine = [e for e in _outbox_since(start) if e["task_id"] == task_id]
    assert [e["event"] for e in mine] == sent
    by_type = {"start": ids[0], "output": ids[2], "logs": ids[3], "completed": ids[4]}
    for e in mine:  # the outbox entry carries the event's stream id, for the receiver to de-duplicate
        assert e["event_id"] == by_type[e["event"]]
        assert json.loads(e["data"]) == json.loads(client.xrange(events.stream_key(task_id), e["event_id"],
                                                                 e["event_id"])[0][1]["data"])


def test_without_a_webhook_nothing_goes_to_the_outbox(task_id) -> None:
    from mediaconduit_worker.worker import events

    start = _outbox_end()
    events.status(task_id, events.RUNNING, attempt=0)
    events.status(task_id, events.SUCCEEDED)
    assert [e for e in _outbox_since(start) if e["task_id"] == task_id] == []
    assert _client().xlen(events.stream_key(task_id)) == 2


def test_the_stream_is_capped_and_expires(task_id, monkeypatch) -> None:
    from mediaconduit_worker import settings
    from mediaconduit_worker.worker import events

    monkeypatch.setenv("MEDIACONDUIT_EVENTS_MAXLEN", "150")
    monkeypatch.setenv("MEDIACONDUIT_EVENTS_TTL", "30")
    settings.get_settings.cache_clear()
    try:
        for n in range(2000):
            events.add(task_id, events.OUTPUT, {"chunk": f"chunk {n}"})
        client = _client()
        kept = client.xrange(events.stream_key(task_id))
        # ``MAXLEN ~`` trims whole nodes of the stream (100 entries by default): about the cap, never far under.
        assert 150 <= len(kept) < 150 + 100
        assert json.loads(kept[-1][1]["data"]) == {"chunk": "chunk 1999"}
        assert 0 < client.ttl(events.stream_key(task_id)) <= 30
        monkeypatch.setenv("MEDIACONDUIT_EVENTS_MAXLEN", "0")  # off: nothing written
        settings.get_settings.cache_clear()
        assert events.add(f"{task_id}-off", events.OUTPUT, {"chunk": "x"}) is None
        assert not client.exists(events.stream_key(f"{task_id}-off"))
    finally:
        monkeypatch.undo()
        settings.get_settings.cache_clear()


def test_an_unknown_event_type_is_refused(task_id) -> None:
    from mediaconduit_worker.worker import events

    with pytest.raises(ValueError, match="event type must be one of"):
        events.add(task_id, "gossip", {})
    assert not _client().exists(events.stream_key(task_id))
