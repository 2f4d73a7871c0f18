"""A job's JSON checks: every problem named at its place, whatever shape the rest of the job has."""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any

import pytest

from mediaconduit_worker.errors import InvalidInputError
from mediaconduit_worker.payload import MAX_DEPTH, check_json


def nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


class Level(enum.IntEnum):
    HIGH = 1


class Name(str):
    pass


@pytest.mark.parametrize("value", [
    None, 1, 1.5, True, "plain", "naïve ☃ 😀", [], {}, (1, "a"),
    {"input": "hello", "provider": "file:///x", "model": "echo", "options": None},
    {"options": {"temperature": 0.2, "stop": ["a", "b"], "nested": {"deep": [1, 2, {"x": None}]}}},
    nested(MAX_DEPTH),  # containers at depths 0 .. MAX_DEPTH - 1
    # Types the quick pass leaves to the careful one, which accepts them as JSON.
    {"level": Level.HIGH}, Name("text"), {Name("key"): 1}, OrderedDict(a=1),
])
def test_plain_json_passes(value: Any) -> None:
    check_json(value)


@pytest.mark.parametrize(("value", "message"), [
    ({"input": "abc\ud800"}, "input holds a lone surrogate '\\ud800' at character 3"),
    ({"options": {"k\udc00": 1}}, "options holds a lone surrogate"),
    ({"options": {"list": [1, "ok", b"bytes"]}}, "options.list[2] is a bytes, not JSON"),
    ({"options": {1: "a"}}, "options has a key 1 that is not a string"),
    ({"input": {1, 2}}, "input is a set, not JSON"),
    (nested(MAX_DEPTH + 1), f"nests deeper than {MAX_DEPTH} levels"),
    (nested(MAX_DEPTH + 1, leaf=None), f"nests deeper than {MAX_DEPTH} levels"),
    ([{"a": Level.HIGH, "b": object()}], "[0].b is a object, not JSON"),
])
def test_each_problem_is_named_at_its_place(value: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_json(value)
    assert message in str(caught.value)
