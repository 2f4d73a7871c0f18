"""Content Credentials on media outputs, made by real workers and read back with the official reader
(``c2pa.Reader`` of c2pa-python), never with our own code: the textrender PNG signed with a pair that
``mediaconduit credentials init`` made, and a worker without a key that leaves its outputs as they were."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import c2pa
import pytest
from conftest import REPO, WorkerProcess

from mediaconduit_worker.blobs import BlobStore

TEXTRENDER = str(REPO / "providers" / "textrender-provider")
ECHO = str(REPO / "providers" / "echo-provider")
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def dev_pair(tmp_path_factory) -> dict[str, Path]:
    """A development pair made by the command, in a home of its own (the shared test home stays keyless)."""
    home = tmp_path_factory.mktemp("signing-home")
    made = cli("credentials", "init", env={"MEDIACONDUIT_HOME": str(home)})
    assert made.returncode == 0, made.stderr
    assert "development certificate" in made.stdout and "untrusted" in made.stdout
    again = cli("credentials", "init", env={"MEDIACONDUIT_HOME": str(home)})
    assert again.returncode == 1 and again.stderr.startswith("error: ") and "--force" in again.stderr
    folder = home / "credentials"
    assert (folder / "signer-key.pem").stat().st_mode & 0o077 == 0
    return {"cert": folder / "signer-chain.pem", "key": folder / "signer-key.pem", "ca": folder / "ca.pem"}


def private_worker(env: dict[str, str]) -> tuple[WorkerProcess, str]:
    queue = f"c2pa-{uuid.uuid4().hex[:8]}"
    return WorkerProcess(queue=queue, concurrency=1, env=env).wait_ready(), queue


@pytest.fixture(scope="module")
def signing_worker(dev_pair):
    worker, queue = private_worker({"MEDIACONDUIT_C2PA_CERT": str(dev_pair["cert"]),
                                    "MEDIACONDUIT_C2PA_KEY": str(dev_pair["key"])})
    yield worker, queue
    worker.stop()


def run(queue: str, *args: Any) -> dict[str, Any]:
    from mediaconduit_worker import transform

    return transform.apply_async(args, queue=queue).get(timeout=120)


def read_back(result: dict[str, Any]) -> c2pa.Reader:
    asset = result["asset"]
    return c2pa.Reader(asset["mime_type"], BlobStore().path_for(asset["sha256"]).open("rb"))


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_rendered_png_carries_valid_credentials_naming_what_made_it(signing_worker, dev_pair):
    worker, queue = signing_worker
    result = run(queue, "Hello Content Credentials", TEXTRENDER, "render-png")
    credentials = result["metadata"]["credentials"]
    prompt = result["metadata"]["generation_prompt"]
    assert credentials["signed"] is True and credentials["action"] == "c2pa.created"
    assert credentials["signer"] == {"subject": "MediaConduit development signer", "issuer": "MediaConduit development CA",
                                     "origin": "operator", "alg": "es256"}
    # The provider's bytes keep their digest in the record (cache and replay compare it); the asset is the signed file.
    assert credentials["unsigned_sha256"] == prompt["output_digest"] != result["asset"]["sha256"]
    stored = BlobStore().path_for(result["asset"]["sha256"]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == result["asset"]["sha256"] and len(stored) == result["asset"]["size"]
    assert len(stored) > credentials["unsigned_size"]

    reader = read_back(result)
    assert reader.get_validation_state() == "Valid"
    failures = [f["code"] for f in reader.get_validation_results()["activeManifest"]["failure"]]
    assert failures == ["signingCredential.untrusted"]  # a development CA: valid, trusted by nobody
    manifest = reader.get_active_manifest()
    assert manifest["label"] == credentials["manifest"]
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    (action,) = assertions["c2pa.actions.v2"]["actions"]
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == IPTC + "algorithmicMedia"  # textrender's manifest declares it
    assert action["softwareAgent"] == {"name": "textrender-provider/render-png", "version": prompt["source"]["commit"]}
    record = assertions["org.mediaconduit.record"]
    assert record["generation_prompt_sha256"] == hashlib.sha256(canonical(prompt)).hexdigest()
    assert record["output_sha256"] == prompt["output_digest"] and record["task_id"] == result["metadata"]["task_id"]
    assert manifest["signature_info"]["common_name"] == "MediaConduit development signer"

    key = dev_pair["key"].read_text().split("-----")[2].strip().splitlines()[0]
    assert key not in json.dumps(result) and key not in worker.log_text()
    assert "media outputs are signed by 'MediaConduit development signer'" in worker.log_text()


@pytest.mark.parametrize("fmt,mime", [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_each_image_format_is_signed_and_reads_back_valid(signing_worker, fmt, mime):
    """PNG, JPEG and WebP from the same real engine: c2pa.Reader finds a valid manifest of the right format, the
    action, source type and agent of textrender's manifest, and the prompt's digest; the media still decodes."""
    from PIL import Image

    _, queue = signing_worker
    result = run(queue, f"Signed {fmt}", TEXTRENDER, "render-image", {"format": fmt})
    prompt, credentials = result["metadata"]["generation_prompt"], result["metadata"]["credentials"]
    assert result["asset"]["mime_type"] == mime and credentials["signed"] is True and credentials["format"] == mime
    reader = read_back(result)
    assert reader.get_validation_state() == "Valid"
    manifest = reader.get_active_manifest()
    assert manifest["label"] == credentials["manifest"]
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    (action,) = assertions["c2pa.actions.v2"]["actions"]
    assert action["action"] == "c2pa.created" and action["digitalSourceType"] == IPTC + "algorithmicMedia"
    assert action["softwareAgent"] == {"name": "textrender-provider/render-image", "version": prompt["source"]["commit"]}
    assert assertions["org.mediaconduit.record"]["generation_prompt_sha256"] == hashlib.sha256(canonical(prompt)).hexdigest()
    with Image.open(BlobStore().path_for(result["asset"]["sha256"])) as image:
        assert image.format == fmt.upper() and image.size[0] > 100


def signature_holds(record: dict[str, Any], ca_path: Path) -> bool:
    """The record's detached signature checked with ``cryptography`` alone, as a reader without our code would:
    over the canonical JSON of the record without ``metadata.signature``, by a certificate the CA issued."""
    import base64

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = record["metadata"]["signature"]
    cert = x509.load_der_x509_certificate(base64.b64decode(signature["certificate"]))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_path.read_bytes()))
    unsigned = {**record, "metadata": {k: v for k, v in record["metadata"].items() if k != "signature"}}
    try:
        cert.public_key().verify(base64.b64decode(signature["value"]), canonical(unsigned), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def test_a_text_output_is_left_as_it_was_and_its_record_is_signed(signing_worker, dev_pair):
    """A text output has no file to embed a manifest in: its record carries a detached signature instead, which
    one changed character of the output, or of the prompt, breaks."""
    _, queue = signing_worker
    result = run(queue, "abc", ECHO, "reverse")
    assert result["asset"]["content"] == "cba" and "credentials" not in result["metadata"]
    signature = result["metadata"]["signature"]
    assert {k: signature[k] for k in ("subject", "issuer", "alg")} == {
        "subject": "MediaConduit development signer", "issuer": "MediaConduit development CA", "alg": "es256"}
    assert signature_holds(result, dev_pair["ca"])
    changed = json.loads(json.dumps(result))
    changed["asset"]["content"] = "cbA"
    assert not signature_holds(changed, dev_pair["ca"])
    changed = json.loads(json.dumps(result))
    changed["metadata"]["generation_prompt"]["options"] = {"n": 2}
    assert not signature_holds(changed, dev_pair["ca"])


def test_a_media_record_is_signed_over_its_credentials_too(signing_worker, dev_pair):
    _, queue = signing_worker
    result = run(queue, "signed record", TEXTRENDER, "render-png")
    assert result["metadata"]["credentials"]["signed"] and signature_holds(result, dev_pair["ca"])
    changed = json.loads(json.dumps(result))
    changed["metadata"]["credentials"]["unsigned_sha256"] = "0" * 64
    assert not signature_holds(changed, dev_pair["ca"])


def test_the_development_pair_under_the_home_signs_when_the_settings_are_unset(dev_pair, tmp_path):
    """A worker whose home holds the pair ``credentials init`` made signs with it; the blob store is shared."""
    from mediaconduit_worker.settings import get_settings

    worker, queue = private_worker({"MEDIACONDUIT_HOME": str(dev_pair["cert"].parents[1]),
                                    "MEDIACONDUIT_BLOB_DIR": str(get_settings().blobs)})
    try:
        result = run(queue, "from the home", TEXTRENDER, "render-png")
    finally:
        worker.stop()
    assert result["metadata"]["credentials"]["signer"]["origin"] == "development"
    assert read_back(result).get_validation_state() == "Valid"
    assert "the development certificate under" in worker.log_text()


def test_without_a_key_outputs_are_unsigned_and_the_worker_says_so_once():
    worker, queue = private_worker({})
    try:
        results = [run(queue, f"unsigned {i}", TEXTRENDER, "render-png") for i in range(2)]
    finally:
        worker.stop()
    for result in results:
        credentials = result["metadata"]["credentials"]
        assert credentials["signed"] is False and "no signing key" in credentials["reason"]
        assert result["asset"]["sha256"] == result["metadata"]["generation_prompt"]["output_digest"]
        assert "signature" not in result["metadata"]
        with pytest.raises(c2pa.C2paError):
            read_back(result).get_active_manifest()
    assert worker.log_text().count("media outputs are not signed") == 1


def test_a_key_named_without_its_certificate_leaves_outputs_unsigned_naming_the_setting(dev_pair):
    worker, queue = private_worker({"MEDIACONDUIT_C2PA_KEY": str(dev_pair["key"])})
    try:
        result = run(queue, "half a pair", TEXTRENDER, "render-png")
    finally:
        worker.stop()
    reason = result["metadata"]["credentials"]["reason"]
    assert "MEDIACONDUIT_C2PA_KEY is set but MEDIACONDUIT_C2PA_CERT is not" in reason
    assert "MEDIACONDUIT_C2PA_CERT is not" in worker.log_text()



def test_an_output_over_the_signing_cap_is_stored_unsigned_naming_the_setting(dev_pair):
    """``MEDIACONDUIT_C2PA_MAX_BYTES`` bounds what c2pa may hold in memory: a PNG over it is kept as made."""
    worker, queue = private_worker({"MEDIACONDUIT_C2PA_CERT": str(dev_pair["cert"]),
                                    "MEDIACONDUIT_C2PA_KEY": str(dev_pair["key"]), "MEDIACONDUIT_C2PA_MAX_BYTES": "1000"})
    try:
        result = run(queue, "too large to sign here", TEXTRENDER, "render-png")
    finally:
        worker.stop()
    credentials, asset = result["metadata"]["credentials"], result["asset"]
    assert credentials["signed"] is False and asset["size"] > 1000
    assert credentials["reason"] == (f"the image/png output is {asset['size']} bytes, over MEDIACONDUIT_C2PA_MAX_BYTES "
                                     "(1000): c2pa would hold it in memory to sign it")
    assert asset["sha256"] == result["metadata"]["generation_prompt"]["output_digest"]  # the bytes as made

# -- mediaconduit verify ------------------------------------------------------------------------------
def verify(*args: str) -> tuple[int, dict[str, Any]]:
    done = cli("verify", "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture(scope="module")
def signed_png(signing_worker, tmp_path_factory) -> dict[str, Path]:
    """A signed PNG's record as a file, and a copy of the PNG as a user downloads it."""
    _, queue = signing_worker
    result = run(queue, "verify me", TEXTRENDER, "render-png")
    folder = tmp_path_factory.mktemp("verify")
    (folder / "result.json").write_text(json.dumps(result))
    (folder / "out.png").write_bytes(BlobStore().path_for(result["asset"]["sha256"]).read_bytes())
    return {"record": folder / "result.json", "file": folder / "out.png", "folder": folder}


def test_verify_a_record_and_its_file_trusted_by_the_ca_given(signed_png, dev_pair):
    code, report = verify(str(signed_png["record"]), "--trust", str(dev_pair["ca"]))
    assert code == 0 and report["verified"] is True and report["problems"] == []
    assert report["file"]["state"] == "Trusted" and report["record"]["trusted"] is True
    (step,) = report["file"]["chain"]
    assert step["signer"] == "MediaConduit development signer" and step["actions"][0]["action"] == "c2pa.created"
    assert step["actions"][0]["digital_source_type"] == "algorithmicMedia"
    assert step["actions"][0]["agent"].startswith("textrender-provider/render-png@")
    # The file a user holds, against the record: the same answer; without the CA, valid but not trusted.
    code, report = verify(str(signed_png["file"]), "--record", str(signed_png["record"]))
    assert code == 0 and report["file"]["state"] == "Valid" and report["record"]["trusted"] is None
    plain = cli("verify", str(signed_png["file"]), "--trust", str(dev_pair["ca"]))
    assert plain.returncode == 0 and "Trusted (trusted)" in plain.stdout and plain.stdout.rstrip().endswith("verified")


def test_one_byte_changed_in_the_file_fails_naming_what(signed_png):
    data = bytearray(signed_png["file"].read_bytes())
    data[data.index(b"IDAT") + 8] ^= 0x01  # a byte of the pixels (the manifest's own chunk is outside the hash)
    changed = signed_png["folder"] / "changed.png"
    changed.write_bytes(bytes(data))
    code, report = verify(str(changed), "--record", str(signed_png["record"]))
    assert code == 1 and report["verified"] is False
    assert report["file"]["state"] == "Invalid" and "assertion.dataHash.mismatch" in report["file"]["failures"]
    assert any("are Invalid" in p for p in report["problems"])
    assert any(p.startswith("the file's bytes (sha256 ") for p in report["problems"])
    text = cli("verify", str(changed))
    assert text.returncode == 1 and "FAIL: " in text.stdout and text.stdout.rstrip().endswith("not verified")


def test_one_byte_changed_in_the_record_fails_naming_the_signature(signed_png):
    record = json.loads(signed_png["record"].read_text())
    record["metadata"]["generation_prompt"]["options"]["fontSize"] = 49
    changed = signed_png["folder"] / "changed.json"
    changed.write_text(json.dumps(record))
    code, report = verify(str(changed))
    assert code == 1
    assert "the record's signature does not match its content: the record was changed after it was signed" in report["problems"]
    assert "the manifest's generation_prompt_sha256 is not the digest of the record's generation prompt" in report["problems"]


def test_verify_a_text_record_by_task_id(signing_worker, dev_pair):
    _, queue = signing_worker
    result = run(queue, "abc", ECHO, "reverse")
    code, report = verify(result["metadata"]["task_id"], "--trust", str(dev_pair["ca"]))
    assert code == 0 and report["record"]["signed"] and report["record"]["trusted"] and "file" not in report


def test_verify_fails_on_a_file_without_credentials_and_refuses_a_bad_argument(tmp_path):
    from PIL import Image

    bare = tmp_path / "bare.png"
    Image.new("RGB", (8, 8)).save(bare)
    code, report = verify(str(bare))
    assert code == 1 and report["problems"] == [f"{bare} carries no Content Credentials c2pa can read " +
                                                report["problems"][0].split(" can read ", 1)[1]]
    missing = cli("verify", str(tmp_path / "nowhere.png"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "nowhere.png" in missing.stderr
    unnamed = tmp_path / "blob"
    unnamed.write_bytes(bare.read_bytes())
    no_type = cli("verify", str(unnamed))
    assert no_type.returncode == 2 and "pass --type" in no_type.stderr
