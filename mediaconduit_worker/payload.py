"""Limits on a job's JSON, checked wherever a job enters: the producer (before anything is queued),
the worker (for messages from Flower or other languages) and the batch reader (per line).

A submitter controls a job's arguments, so a job must not be able to fill Redis or a worker's
memory (``MEDIACONDUIT_MAX_JOB_BYTES``), exhaust the recursion of whatever walks it (``MAX_DEPTH``),
or carry text that is not Unicode (a lone surrogate cannot be encoded, hashed or sent on).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .errors import InvalidInputError
from .settings import get_settings

#: Deepest nesting of lists and objects a job may have. A chain nests each step's generation prompt
#: three levels inside the next one's, so this leaves room for chains of about 60 steps.
MAX_DEPTH = 200
_SCALARS = (str, int, float, bool, type(None))


def _where(path: tuple[Any, ...]) -> str:
    """``("input", 0, "metadata")`` → ``input[0].metadata``; a deep path is cut short."""
    out = ""
    for part in path[:6]:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(path) > 6:
        out += f"… ({len(path)} levels down)"
    return out or "the job"


def check_json(value: Any) -> None:
    """Raise ``InvalidInputError`` naming the place (``input[0].metadata``) where ``value`` is not plain
    JSON, nests deeper than ``MAX_DEPTH`` or holds a lone surrogate. Iterative: any depth is safe."""
    if not is_plain_json(value):
        _raise_at_problem(value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_PLAIN_SCALARS = frozenset({int, float, bool, type(None)})


def is_plain_json(value: Any, *, tuples: bool = True) -> bool:
    """True when ``value`` is certainly within the rules: exact dicts, lists (and tuples, unless ``tuples``
    is false), strings and scalars, string keys, encodable text, containers less than ``MAX_DEPTH`` deep.
    False does not mean wrong, only not vouched for (an IntEnum, a str subclass): the caller takes its
    careful path. Every job is checked at least twice (producer and worker) and every result record
    once, so this walk keeps no paths and makes no copies."""
    sequences = (list, tuple) if tuples else (list,)
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if not (item.isascii() or _encodable(item)):
                return False
            continue
        if kind in _PLAIN_SCALARS:
            continue
        if depth >= MAX_DEPTH:
            return False
        children: Iterable[Any]
        if kind is dict:
            for key in item:
                if type(key) is not str or not (key.isascii() or _encodable(key)):
                    return False
            children = item.values()
        elif kind in sequences:
            children = item
        else:
            return False
        for sub in children:
            sub_kind = type(sub)
            if sub_kind is str:
                if not (sub.isascii() or _encodable(sub)):
                    return False
            elif sub_kind not in _PLAIN_SCALARS:
                stack.append((sub, depth + 1))
    return True


def _raise_at_problem(value: Any) -> None:
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 0, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    f"{_where(path)} holds a lone surrogate {item[exc.start]!r} at character {exc.start}: not valid Unicode"
                ) from None
        elif isinstance(item, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                raise InvalidInputError(f"{_where(path)} nests deeper than {MAX_DEPTH} levels of lists and objects")
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise InvalidInputError(f"{_where(path)} has a key {key!r} that is not a string: not JSON")
                    stack.append((key, depth + 1, path))
                    stack.append((sub, depth + 1, (*path, key)))
            else:
                stack.extend((sub, depth + 1, (*path, i)) for i, sub in enumerate(item))
        elif not isinstance(item, _SCALARS):
            raise InvalidInputError(f"{_where(path)} is a {type(item).__name__}, not JSON")


def refuse_size(size: int, what: str) -> None:
    """Raise ``InvalidInputError`` when ``size`` bytes exceed ``MEDIACONDUIT_MAX_JOB_BYTES``."""
    limit = get_settings().max_job_bytes
    if size > limit:
        raise InvalidInputError(
            f"{what} is {size:,} bytes of JSON, more than MEDIACONDUIT_MAX_JOB_BYTES allows ({limit:,}); "
            "send large media as a blob:// reference or an allowed URL"
        )


def check_job(value: Any, what: str = "the job") -> None:
    """``check_json``, then the size limit on ``value`` as JSON (as Celery sends it)."""
    check_json(value)
    refuse_size(len(json.dumps(value)), what)
