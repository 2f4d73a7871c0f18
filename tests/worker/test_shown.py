"""What events and log lines show of a job's arguments and results: a short repr, cut where it is long."""

from __future__ import annotations

from mediaconduit_worker.worker.redaction import SHOWN_ITEMS, SHOWN_MAX, SHOWN_STRING, argsrepr, shown


def test_a_result_record_shows_every_field_with_long_strings_and_lists_cut():
    result = {"asset": {"type": "text", "content": "x" * 5000},
              "metadata": {"scores": list(range(100)), "route": "chat", "candidate": {"index": 2}}}
    text = shown(result)
    assert len(text) < SHOWN_MAX
    assert f"'content': '{'x' * SHOWN_STRING}...'" in text
    assert f"'scores': {list(range(SHOWN_ITEMS))}"[:-1] + f", '... {100 - SHOWN_ITEMS} more']" in text
    assert text.endswith("'route': 'chat', 'candidate': {'index': 2}}}")  # nothing after a long field is lost
    assert eval(text)["metadata"]["candidate"] == {"index": 2}  # still a Python literal, as saferepr gave


def test_the_whole_is_cut_at_its_limit_and_other_objects_fall_back_to_saferepr():
    many = {f"key{i}": "v" * 100 for i in range(100)}
    assert len(shown(many)) == SHOWN_MAX and shown(many).endswith("...")
    assert shown({"a": {1, 2}}) == "{'a': {1, 2}}"  # a set is not JSON: Celery's saferepr shows it
    deep: list = []
    for _ in range(50):
        deep = [deep]
    assert "'...'" in shown(deep)


def test_arguments_are_shown_redacted():
    text = argsrepr(["hello", "https://user:hunter2@example.com/p.git", "m", {"api_key": "sk-live-123456789"}])
    assert "hunter2" not in text and "sk-live-123456789" not in text and "'hello'" in text
