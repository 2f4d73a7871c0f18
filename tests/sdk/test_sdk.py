"""SDK and manifest units: capability spellings, real published manifests, prompts, assets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mediaconduit_worker import Audio, MediaCapability, ProviderModel, Text, create_generation_prompt
from mediaconduit_worker.capabilities import capability, parse_capability
from mediaconduit_worker.errors import ManifestError
from mediaconduit_worker.manifest import (
    PROVIDER_MANIFEST,
    SERVICE_MANIFEST,
    load_provider_manifest,
    load_service_manifest,
)

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real-manifests"
REAL_PROVIDERS = sorted(REAL.glob("*--MediaConduit.provider.yml"))
REAL_SERVICES = sorted(REAL.glob("*--MediaConduit.service.yml"))


@pytest.mark.parametrize("spelling", ["text-to-text", "TEXT_TO_TEXT", "TextToText", "text_to_text", " Text-To-Text "])
def test_capability_spellings(spelling):
    assert parse_capability(spelling) is MediaCapability.TEXT_TO_TEXT
    assert MediaCapability(spelling) is MediaCapability.TEXT_TO_TEXT


def test_fourteen_capabilities_and_a_clear_error():
    assert len(MediaCapability) == 14
    assert parse_capability("IMAGE_TO_3D") is MediaCapability.IMAGE_TO_3D
    with pytest.raises(ValueError, match="'transcription'"):
        capability("transcription")


def test_the_real_manifests_are_all_there():
    assert len(REAL_PROVIDERS) == 5 and len(REAL_SERVICES) == 3


@pytest.mark.parametrize("path", REAL_PROVIDERS, ids=lambda p: p.name.split("--")[0])
def test_real_provider_manifests_load(path, tmp_path):
    shutil.copy(path, tmp_path / PROVIDER_MANIFEST)
    m = load_provider_manifest(tmp_path)
    assert m.id and m.name and m.capabilities
    assert m.capability_of(m.models[0].id if m.models else "any-model") in m.capabilities


def test_real_manifest_details(tmp_path):
    def load(name: str):
        shutil.copy(REAL / f"{name}--MediaConduit.provider.yml", tmp_path / PROVIDER_MANIFEST)
        return load_provider_manifest(tmp_path)

    whisper = load("whisper-provider")
    assert whisper.capabilities == [MediaCapability.AUDIO_TO_TEXT]
    assert whisper.other_capabilities == ["speech-to-text", "transcription", "translation"]
    assert [m.id for m in whisper.models][:2] == ["whisper-stt", "whisper-base"]
    assert whisper.model_extra["supportedFormats"]["output"] == ["text"]  # unknown keys kept
    ollama = load("ollama-provider")
    assert ollama.dynamic_models and ollama.model_defaults["parameters"]["maxTokens"] == 4096
    assert ollama.capability_of("llama2") is MediaCapability.TEXT_TO_TEXT
    cowsay = load("cowsay-provider")
    assert cowsay.dependencies == {"axios": "^1.6.0"}
    assert cowsay.service_url == "https://github.com/MediaConduit/cowsay-service"


@pytest.mark.parametrize("path", REAL_SERVICES, ids=lambda p: p.name.split("--")[0])
def test_real_service_manifests_load(path, tmp_path):
    shutil.copy(path, tmp_path / SERVICE_MANIFEST)
    m = load_service_manifest(tmp_path)
    assert m.id and m.docker.service_name and m.docker.compose_file == "docker-compose.yml"


def test_models_as_a_map_and_dependencies_as_strings(tmp_path):
    (tmp_path / PROVIDER_MANIFEST).write_text(
        "id: p\nname: P\ncapabilities: [TextToImage]\n"
        "models:\n  fast: {name: Fast, capabilities: [text-to-image]}\n  slow: {name: Slow}\n"
        "dependencies: ['pillow>=10', 'numpy']\n"
    )
    m = load_provider_manifest(tmp_path)
    assert [x.id for x in m.models] == ["fast", "slow"]
    assert m.dependencies == {"pillow": ">=10", "numpy": ""}
    assert m.capability_of("slow") is MediaCapability.TEXT_TO_IMAGE


@pytest.mark.parametrize(
    "text, field",
    [
        ("name: P\n", "field 'id'"),
        ("id: p\nname: P\nmodels: [{name: no-id}]\n", "field 'models.0.id'"),
        ("id: p\nname: P\ntype: hybrid\n", "field 'type'"),
        ("id: p\nname: P\ncapabilities: 7\n", "field 'capabilities'"),
        ("id: [1]\nname: P\n", "field 'id'"),
        ("- just\n- a list\n", "must be a mapping"),
        ("id: p\nname: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_manifests_name_the_field(tmp_path, text, field):
    (tmp_path / PROVIDER_MANIFEST).write_text(text)
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace(".", r"\.")):
        load_provider_manifest(tmp_path, origin="https://github.com/x/y")


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(ManifestError, match="no MediaConduit.provider.yml"):
        load_provider_manifest(tmp_path)


def test_generation_prompt_keeps_input_raw_and_redacts_secrets():
    first = Text.from_string("a", metadata={"generation_prompt": {"model_id": "m1", "input": "raw"}})
    prompt = create_generation_prompt(
        input=first,
        options={"apiKey": "abc", "nested": {"password": "p", "ok": 1}, "auth": "Bearer abcdefghijklmnop", "t": 0.5},
        model_id="m2", provider="p", transformation_type=MediaCapability.TEXT_TO_TEXT, processing_time=1.5,
    )
    assert prompt["input"]["metadata"]["generation_prompt"] == {"model_id": "m1", "input": "raw"}
    assert prompt["options"] == {"apiKey": "[REDACTED]", "nested": {"password": "[REDACTED]", "ok": 1},
                                 "auth": "[REDACTED]", "t": 0.5}
    assert prompt["transformation_type"] == "text-to-text" and prompt["model_name"] == "m2"


def test_provider_model_positional_and_capabilities():
    m = ProviderModel("id1", "Name", "desc", capabilities=["TEXT_TO_AUDIO"])
    assert (m.id, m.name, m.description, m.capabilities) == ("id1", "Name", "desc", [MediaCapability.TEXT_TO_AUDIO])


def test_binary_asset_round_trips_through_the_blob_store(tmp_path, monkeypatch):
    from mediaconduit_worker.assets import asset_from_json
    from mediaconduit_worker.blobs import BlobStore

    monkeypatch.setenv("MEDIACONDUIT_BLOB_DIR", str(tmp_path))
    from mediaconduit_worker.settings import get_settings

    get_settings.cache_clear()
    try:
        audio = Audio.from_bytes(b"RIFF....WAVEdata", "audio/wav", metadata={"generation_prompt": {"x": 1}})
        ref = audio.to_json(with_prompt=False)
        assert "generation_prompt" not in ref["metadata"]
        assert ref["uri"].startswith("blob://sha256/") and ref["size"] == 16 and ref["mime_type"] == "audio/wav"
        assert BlobStore().get(ref["uri"]) == b"RIFF....WAVEdata"
        back = asset_from_json({"asset": ref, "metadata": {"generation_prompt": {"x": 1}}})
        assert isinstance(back, Audio) and back.data == b"RIFF....WAVEdata" and back.generation_prompt == {"x": 1}
    finally:
        get_settings.cache_clear()
