"""Helpers for the toolkit tests: the CLI commands run in-process, their JSON read back, and the record schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from conftest import REPO

SCHEMA = json.loads((REPO / "docs" / "record.schema.json").read_text())


def run_cli(*args: str) -> tuple[int, Any, str]:
    """``mediaconduit ARGS`` in this process: (exit code, JSON on stdout or None, everything printed)."""
    from mediaconduit_worker.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    try:
        data = json.loads(result.stdout)
    except ValueError:
        data = None
    return result.exit_code, data, result.output


def validate(url: str, *args: str) -> tuple[int, dict[str, dict[str, Any]], Any]:
    """``providers validate URL --json``: (exit code, checks by name, the whole report)."""
    code, report, output = run_cli("providers", "validate", url, "--json", *args)
    assert report is not None, output
    return code, {c["name"]: c for c in report["checks"]}, report


def replay(result: dict[str, Any], tmp: Path, *args: str, yes: bool = True) -> tuple[int, Any, str]:
    """``replay RESULT.json --json [--yes] ARGS`` over a result written to a file (``--yes``: the tests run
    with no allow-list, and these records are the tests' own)."""
    path = tmp / f"result-{len(list(tmp.glob('result-*.json')))}.json"
    path.write_text(json.dumps(result))
    return run_cli("replay", str(path), "--json", *(["--yes"] if yes else []), *args)


def prompts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A result's generation prompts, first step first."""
    from mediaconduit_worker.worker.replay_plan import recorded_prompts

    return recorded_prompts(result)


def assert_record(result: dict[str, Any]) -> None:
    """The result matches docs/record.schema.json, and so does every step's prompt it nests."""
    import jsonschema

    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(result)
    for prompt in prompts(result):
        assert prompt["record_version"] == "2" and prompt["output_digest"]
