"""Reading a batch file (JSONL): good lines become items, bad lines become errors with their line
number, and one bad line never stops the rest (not even one nested 100,000 deep)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..assets import check_job_input
from ..errors import InvalidInputError
from ..payload import check_json, refuse_size


@dataclass(frozen=True)
class InputItem:
    """One job's input from line ``line``; ``options`` add to the command's, ``key`` is the line's ``id``.
    A line ``{"file": PATH}`` has no input yet: ``file`` is the path it names, read only with ``--allow-files``."""

    line: int
    input: Any
    options: dict[str, Any] = field(default_factory=dict)
    key: Any = None
    file: str | None = None


@dataclass(frozen=True)
class BadLine:
    line: int
    error: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.error}"


def parse_line(number: int, text: str) -> InputItem | BadLine:
    """A line is a JSON string (the input), an object ``{"input": …, "options": {…}, "id": …}``, an asset
    object (with ``type``), a list of inputs, or ``{"file": PATH, "options": {…}, "id": …}`` naming a local
    file (the batch command reads it only with ``--allow-files``). What a worker would refuse (too large,
    nested too deeply, a lone surrogate, a file path as an asset) is a bad line here already."""
    try:
        refuse_size(len(text.encode("utf-8", "replace")), "the line")
        value = json.loads(text)
    except InvalidInputError as exc:
        return BadLine(number, str(exc))
    except RecursionError:
        return BadLine(number, "nested too deeply to read (lists and objects inside each other)")
    except json.JSONDecodeError as exc:  # its own "line 1" would stand beside the file's line number
        return BadLine(number, f"not JSON ({exc.msg} at column {exc.colno})")
    except ValueError as exc:
        return BadLine(number, f"not JSON ({exc})")
    options = (value.get("options") or {}) if isinstance(value, dict) and ("input" in value or "file" in value) else {}
    if not isinstance(options, dict):
        return BadLine(number, f"'options' must be a JSON object, got {type(options).__name__}")
    if isinstance(value, str) or (isinstance(value, list) and value):
        item = InputItem(number, value)
    elif isinstance(value, dict) and "file" in value:
        name = value["file"]
        if "input" in value:
            return BadLine(number, "give 'input' or 'file', not both")
        if not isinstance(name, str) or not name:
            return BadLine(number, f"'file' must be a path (a string), got {type(name).__name__}")
        item = InputItem(number, None, options, value.get("id"), file=name)
    elif isinstance(value, dict) and "input" in value:
        inp = value["input"]
        if not (isinstance(inp, (str, dict)) or (isinstance(inp, list) and inp)):
            return BadLine(number, f"'input' must be a string, an asset object or a list, got {type(inp).__name__}")
        item = InputItem(number, inp, options, value.get("id"))
    elif isinstance(value, dict) and "type" in value:
        item = InputItem(number, value)
    else:
        return BadLine(number, "expected a string, an object with 'input' or 'file', an asset object or a list of "
                               f"inputs, got {type(value).__name__}")
    try:
        check_json({"input": item.input, "options": item.options, "id": item.key})
        check_job_input(item.input)
    except InvalidInputError as exc:
        return BadLine(number, str(exc))
    return item


def read_jsonl(path: Path) -> tuple[list[InputItem], list[BadLine], int]:
    """Items, bad lines, and how many non-blank lines there were (0: the file is empty)."""
    items: list[InputItem] = []
    bad: list[BadLine] = []
    nonblank = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            nonblank += 1
            parsed = parse_line(number, text)
            (items if isinstance(parsed, InputItem) else bad).append(parsed)  # type: ignore[arg-type]
    return items, bad, nonblank


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """Records of an earlier run's results file by job id (the last record of an id wins)."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with open(path, encoding="utf-8", errors="replace") as fh:
        for text in fh:
            try:
                rec = json.loads(text)
            except ValueError:
                continue  # a line cut short by an interrupted run
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                records[rec["id"]] = rec
    return records
