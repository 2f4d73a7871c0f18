"""Content Credentials on the audio and video the reference engines make in real containers (espeak-ng's WAV,
ffmpeg's MP3 and MP4), read back with the official reader (``c2pa.Reader``), never with our own code; the
chains' ingredients keep each step's own manifest, so the last file holds the history down to the first
input; a format C2PA defines no manifest for (Ogg) is stored as ffmpeg made it, the record saying why.

The input video is made here with the host's espeak-ng and ffmpeg (scripts/ci-setup.sh installs them).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import c2pa
import pytest
from conftest import WorkerProcess

from mediaconduit_worker.blobs import BlobStore

pytestmark = pytest.mark.docker
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def host(*cmd: str) -> None:
    if shutil.which(cmd[0]) is None:
        pytest.fail(f"{cmd[0]} is not installed on this host (scripts/ci-setup.sh installs it)", pytrace=False)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """Two seconds of test pattern with speech as its sound: unsigned, as a user's upload would be."""
    folder = tmp_path_factory.mktemp("media")
    speech, path = folder / "speech.wav", folder / "talking.mp4"
    host("espeak-ng", "-w", str(speech), "content credentials on a video")
    host("ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=10",
         "-i", str(speech), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


@pytest.fixture(scope="module")
def signing_pair(tmp_path_factory) -> Path:
    """A development pair of this module's own: the folder holding the chain, the key and the CA."""
    from mediaconduit_worker.worker.signatures import make_development_credentials

    folder = tmp_path_factory.mktemp("signing") / "credentials"
    make_development_credentials(folder)
    return folder


@pytest.fixture(scope="module")
def signing_queue(provider_urls, signing_pair):
    """A worker on a private queue signing with that pair."""
    from mediaconduit_worker.worker.signatures import CERT_FILE, KEY_FILE

    queue = f"c2pa-media-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(queue=queue, concurrency=2, env={"MEDIACONDUIT_C2PA_CERT": str(signing_pair / CERT_FILE),
                                                            "MEDIACONDUIT_C2PA_KEY": str(signing_pair / KEY_FILE)}).wait_ready()
    yield queue
    worker.stop()


@pytest.fixture(scope="module")
def ca(signing_pair) -> Any:
    """The development CA that issued the signing worker's certificate."""
    from cryptography import x509

    from mediaconduit_worker.worker.signatures import CA_FILE

    return x509.load_pem_x509_certificate((signing_pair / CA_FILE).read_bytes())


def step(queue: str, *args: Any) -> Any:
    from mediaconduit_worker import transform

    return transform.s(*args).set(queue=queue)


def reader_of(result: dict[str, Any]) -> c2pa.Reader:
    asset = result["asset"]
    return c2pa.Reader(asset["mime_type"], BlobStore().path_for(asset["sha256"]).open("rb"))


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def actions_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    return assertions["c2pa.actions.v2"]["actions"]


def record_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return next(a["data"] for a in manifest["assertions"] if a["label"] == "org.mediaconduit.record")


def check_signed(result: dict[str, Any], mime: str) -> tuple[c2pa.Reader, dict[str, Any]]:
    """The output is the signed file the record names, valid for c2pa.Reader, its record assertion holding the
    generation prompt's digest and the provider's own digest."""
    prompt, credentials = result["metadata"]["generation_prompt"], result["metadata"]["credentials"]
    assert result["asset"]["mime_type"] == mime and credentials["signed"] is True, credentials
    assert credentials["unsigned_sha256"] == prompt["output_digest"] != result["asset"]["sha256"]
    reader = reader_of(result)
    assert reader.get_validation_state() == "Valid", reader.get_validation_results()
    manifest = reader.get_active_manifest()
    assert manifest["label"] == credentials["manifest"]
    record = record_of(manifest)
    assert record["generation_prompt_sha256"] == hashlib.sha256(canonical(prompt)).hexdigest()
    assert record["output_sha256"] == prompt["output_digest"]
    return reader, manifest


def test_speech_then_mp3_both_signed_the_mp3_holding_the_wav_and_its_manifest(signing_queue, provider_urls):
    """espeak's WAV is created (algorithmicMedia, espeak's agent at its commit); ffmpeg's MP3 of it is
    transcoded (opened first, no source type of its own), its parent ingredient the WAV with the WAV's manifest."""
    from mediaconduit_worker import transform

    wav = transform.apply_async(("signed speech", provider_urls["espeak"], "espeak-default"),
                                queue=signing_queue).get(timeout=300)
    _, made = check_signed(wav, "audio/wav")
    (created,) = actions_of(made)
    assert created["action"] == "c2pa.created" and created["digitalSourceType"] == IPTC + "algorithmicMedia"
    assert created["softwareAgent"] == {"name": "espeak-docker-provider/espeak-default",
                                        "version": wav["metadata"]["generation_prompt"]["source"]["commit"]}

    mp3 = transform.apply_async((wav, provider_urls["ffmpeg"], "convert-audio", {"format": "mp3"}),
                                queue=signing_queue).get(timeout=300)
    reader, manifest = check_signed(mp3, "audio/mpeg")
    opened, transcoded = actions_of(manifest)
    assert opened["action"] == "c2pa.opened" and transcoded["action"] == "c2pa.transcoded"
    assert "digitalSourceType" not in transcoded  # ffmpeg declares none: a transform adds no source type
    assert transcoded["softwareAgent"]["name"] == "ffmpeg-docker-provider/convert-audio"
    (ingredient,) = manifest["ingredients"]
    assert ingredient["relationship"] == "parentOf" and ingredient["format"] == "audio/wav"
    assert ingredient["active_manifest"] == wav["metadata"]["credentials"]["manifest"]
    kept = reader.get_manifest(ingredient["active_manifest"])
    assert actions_of(kept)[0]["action"] == "c2pa.created" and record_of(kept)["task_id"] == wav["metadata"]["task_id"]


def test_a_transcoded_video_then_its_audio_hold_the_chain_down_to_the_unsigned_upload(signing_queue, provider_urls, video):
    """transcode → extract-audio as one chain: the MP4 is transcoded from the upload (an ingredient without a
    manifest); the audio is converted from the MP4, which it holds as an ingredient with the MP4's manifest,
    which holds the upload: three generations in the last file."""
    from mediaconduit_worker import Video

    upload = Video.from_path(video).to_json()
    chain = step(signing_queue, upload, provider_urls["ffmpeg"], "transcode", {"height": 120}) \
        | step(signing_queue, provider_urls["ffmpeg"], "extract-audio", {"format": "wav"})
    audio = chain.delay().get(timeout=300)
    reader, manifest = check_signed(audio, "audio/wav")
    assert [a["action"] for a in actions_of(manifest)] == ["c2pa.opened", "c2pa.converted"]
    (mp4,) = manifest["ingredients"]
    assert mp4["format"] == "video/mp4" and mp4["relationship"] == "parentOf" and mp4["active_manifest"]
    video_manifest = reader.get_manifest(mp4["active_manifest"])
    assert [a["action"] for a in actions_of(video_manifest)] == ["c2pa.opened", "c2pa.transcoded"]
    assert actions_of(video_manifest)[1]["softwareAgent"]["name"] == "ffmpeg-docker-provider/transcode"
    step_prompt = audio["metadata"]["generation_prompt"]["input"]["metadata"]["generation_prompt"]
    assert record_of(video_manifest)["generation_prompt_sha256"] == hashlib.sha256(canonical(step_prompt)).hexdigest()
    (first,) = video_manifest["ingredients"]
    assert first["format"] == "video/mp4" and "active_manifest" not in first  # the upload carried no credentials
    failures = [f["code"] for f in reader.get_validation_results()["activeManifest"]["failure"]]
    assert failures == ["signingCredential.untrusted"]  # a development CA: valid, trusted by nobody

    mp4_file = audio["metadata"]["generation_prompt"]["input"]
    with BlobStore().path_for(mp4_file["sha256"]).open("rb") as stream:
        own = c2pa.Reader("video/mp4", stream)
        assert own.get_validation_state() == "Valid" and own.get_active_manifest()["label"] == mp4["active_manifest"]


def test_a_thumbnail_read_by_ocr_gives_a_signed_text_record(signing_queue, provider_urls, video, ca):
    """thumbnail → tesseract: the PNG frame is converted from the video (its ingredient); the text has no file to
    carry a manifest, so its record is signed, by a certificate the worker's CA issued; the PNG it names carries
    its own manifest in its file."""
    from mediaconduit_worker import Video
    from mediaconduit_worker.worker.signatures import check_record

    chain = step(signing_queue, Video.from_path(video).to_json(), provider_urls["ffmpeg"], "thumbnail", {"at": 1}) \
        | step(signing_queue, provider_urls["tesseract"], "tesseract-ocr")
    text = chain.delay().get(timeout=300)
    assert text["asset"]["type"] == "text" and "credentials" not in text["metadata"]
    checked = check_record(text, [ca])
    assert checked.signed and checked.trusted and checked.problems == []
    thumbnail = text["metadata"]["generation_prompt"]["input"]
    reader = reader_of({"asset": thumbnail})
    assert thumbnail["mime_type"] == "image/png" and reader.get_validation_state() == "Valid"
    manifest = reader.get_active_manifest()
    assert [a["action"] for a in actions_of(manifest)] == ["c2pa.opened", "c2pa.converted"]
    own_prompt = thumbnail["metadata"]["generation_prompt"]
    assert record_of(manifest)["generation_prompt_sha256"] == hashlib.sha256(canonical(own_prompt)).hexdigest()
    assert manifest["ingredients"][0]["format"] == "video/mp4"
    changed = json.loads(json.dumps(text))
    changed["asset"]["content"] += "!"
    assert check_record(changed, [ca]).problems == [
        "the record's signature does not match its content: the record was changed after it was signed"]


def test_a_format_c2pa_defines_no_manifest_for_is_stored_as_made_the_record_saying_why(signing_queue, provider_urls,
                                                                                       video):
    from mediaconduit_worker import Video, transform

    ogg = transform.apply_async((Video.from_path(video).to_json(), provider_urls["ffmpeg"], "extract-audio",
                                 {"format": "ogg"}), queue=signing_queue).get(timeout=300)
    credentials = ogg["metadata"]["credentials"]
    assert ogg["asset"]["mime_type"] == "audio/ogg"
    assert credentials == {"signed": False, "reason": "C2PA defines no embedded manifest for audio/ogg"}
    assert ogg["asset"]["sha256"] == ogg["metadata"]["generation_prompt"]["output_digest"]
    assert BlobStore().get(ogg["asset"]["uri"])[:4] == b"OggS"
