"""What events and log lines show of a job's arguments and results: short JSON, cut where it is long."""

from __future__ import annotations

import json

from mediaconduit_worker.worker.redaction import SHOWN_ITEMS, SHOWN_MAX, SHOWN_STRING, argsrepr, shown


def test_a_result_record_shows_every_field_with_long_strings_and_lists_cut():
    result = {"asset": {"type": "text", "content": "x" * 5000},
              "metadata": {"scores": list(range(100)), "route": "chat", "candidate": {"index": 2}}}
    text = shown(result)
    assert len(text) < SHOWN_MAX
    assert f'"content": "{"x" * SHOWN_STRING}..."' in text
    assert f'"scores": {list(range(SHOWN_ITEMS))}'[:-1] + f', "... {100 - SHOWN_ITEMS} more"]' in text
    assert text.endswith('"route": "chat", "candidate": {"index": 2}}}')  # nothing after a long field is lost
    assert json.loads(text)["metadata"]["candidate"] == {"index": 2}  # JSON, as Flower shows it


def test_the_whole_is_cut_at_its_limit_and_other_objects_fall_back_to_saferepr():
    many = {f"key{i}": "v" * 100 for i in range(100)}
    assert len(shown(many)) == SHOWN_MAX and shown(many).endswith("...")
    assert shown({"a": {1, 2}}) == "{'a': {1, 2}}"  # a set is not JSON: Celery's saferepr shows it
    deep: list = []
    for _ in range(50):
        deep = [deep]
    assert '"..."' in shown(deep)


def test_arguments_are_shown_redacted():
    text = argsrepr(["hello", "https://user:hunter2@example.com/p.git", "m", {"api_key": "sk-live-123456789"}])
    assert "hunter2" not in text and "sk-live-123456789" not in text and '"hello"' in text


def test_a_transform_result_record_is_shown_as_what_served_and_what_came_out():
    prompt = {"input": "y" * 5000, "input_digest": "d" * 64, "route": "chat", "provider": "p", "model_id": "m",
              "provider_url": "https://x/p", "capability": "text-to-text",
              "source": {"kind": "git", "commit": "c" * 40}}
    record = {"metadata": {"generation_prompt": prompt,
                           "candidate": {"index": 2, "provider": "https://x/p", "model": "m"},
                           "processing_time_ms": 12.5, "task_id": "t-1", "worker": "w@h",
                           "attempts": [{"candidate": 1, "error": "ProviderHTTPError"}]},
              "asset": {"type": "text", "content": "x" * 5000, "language": "auto",
                        "metadata": {"cost": {"usd": 0.25}, "usage": {"total_tokens": 9}}}}
    assert json.loads(shown(record)) == {
        "metadata": {"route": "chat", "provider": "p", "model_id": "m", "capability": "text-to-text",
                     "candidate": {"index": 2, "provider": "https://x/p", "model": "m"}, "processing_time_ms": 12.5},
        "asset": {"type": "text", "content": "x" * SHOWN_STRING + "...", "language": "auto", "metadata": {"cost": {"usd": 0.25}}},
    }
    assert record["metadata"]["generation_prompt"]["input"] == "y" * 5000  # the record itself is left whole
