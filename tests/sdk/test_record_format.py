"""Record format 2: one pydantic model, the published schema generated from it, format 1 still read."""

from __future__ import annotations

import json

import jsonschema
from conftest import REPO

from mediaconduit_worker.record import (
    RECORD_VERSION,
    GenerationPrompt,
    ResultMetadata,
    prompt_source,
    record_schema,
    upgrade_record,
)

SCHEMA_FILE = REPO / "docs" / "record.schema.json"


def _v1() -> dict:
    text = (REPO / "tests" / "fixtures" / "record-v1.json").read_text()
    return json.loads(text.replace("@@PROVIDER_URL@@", "https://github.com/MediaConduit/textops-provider@main")
                      .replace("@@COMMIT@@", "f" * 40))


def test_the_published_schema_is_the_models():
    assert json.loads(SCHEMA_FILE.read_text()) == record_schema(), "docs/record.schema.json is stale: run make schema"
    assert RECORD_VERSION == "2" and record_schema()["title"].endswith("record format 2")


def test_metadata_does_not_repeat_the_generation_prompt():
    prompt_fields = set(GenerationPrompt.model_fields)
    metadata_fields = set(ResultMetadata.model_fields) - {"generation_prompt"}
    assert not prompt_fields & metadata_fields
    assert {"provider", "provider_url", "capability", "source", "route"} <= prompt_fields


def test_a_format_1_record_upgrades_to_a_valid_format_2_record():
    v1 = _v1()
    v2 = upgrade_record(v1)
    jsonschema.Draft202012Validator(record_schema()).validate(v2)
    prompt = v2["metadata"]["generation_prompt"]
    assert prompt["record_version"] == "2"
    assert prompt["source"] == {"kind": "git", "ref": "main", "commit": "f" * 40}
    assert prompt["provider_url"] == "https://github.com/MediaConduit/textops-provider@main"
    assert not {"provider_commit", "provider_version", "source_kind"} & set(prompt)
    assert set(v2["metadata"]) == {"generation_prompt", "processing_time_ms", "task_id", "worker"}
    assert v2["asset"] == v1["asset"] and v1["metadata"]["provider"] == "textops-provider"  # the input is not changed
    inner = prompt["input"]["metadata"]["generation_prompt"]  # history keeps the format it was written in
    assert inner["record_version"] == "1" and prompt_source(inner) == {"commit": "f" * 40, "kind": "git"}
    assert upgrade_record(v2) == v2
