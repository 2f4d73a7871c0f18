"""Content Credentials (C2PA): a media output is stored with a signed manifest embedded in the file, so
its history travels with it once it is downloaded (``docs/credentials.md``).

The manifest says what made the file (``c2pa.actions``: created, or opened and then edited, transcoded
or converted), the IPTC digital source type its provider's manifest declares, the provider, model and
commit as the software agent, and the digest of the job's generation prompt. Each input media asset is
an ingredient with its own manifest kept, so a chain's whole history is in its last file. Signing uses
the official library (``c2pa-python``) with the operator's key and certificate chain
(``MEDIACONDUIT_C2PA_CERT``/``_KEY``), else the development pair ``mediaconduit credentials init`` made
under ``home/credentials``; with neither, nothing is signed. Files are signed from stream to file, never
held whole in memory by this code.

Only a job with a media output imports this module: a text job pays nothing for it.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..assets import Asset, BinaryAsset, input_items
from ..blobs import BlobStore
from ..errors import ConfigurationError
from ..record import package_version
from ..settings import get_settings

log = logging.getLogger(__name__)

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
"""The IPTC digital source type vocabulary; a manifest's ``digitalSourceType`` names a term of it."""
RECORD_LABEL = "org.mediaconduit.record"
"""The assertion holding the digest of the job's generation prompt (its canonical JSON) and the task id."""
CERT_FILE, KEY_FILE, CA_FILE = "signer-chain.pem", "signer-key.pem", "ca.pem"
"""The files of ``home/credentials`` that ``credentials init`` writes (the CA's own key is not kept)."""
_BUILD_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}
"""No JPEG thumbnail in the manifest: decoding and scaling the media would cost more than the signature."""


def canonical_json(value: Any) -> bytes:
    """The one byte form of a record that its digest and signature are over: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- keys -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SigningKey:
    """A signing key and its certificate chain, read once; ``key`` is never shown (not in its repr)."""

    chain: bytes
    key: bytes = field(repr=False)
    alg: str
    origin: str
    """``operator`` (the two settings) or ``development`` (``credentials init``: trusted by nobody else)."""
    subject: str
    issuer: str
    tsa_url: str | None = None

    def describe(self) -> dict[str, Any]:
        """Who signs, as a record shows it: never the key."""
        return {"subject": self.subject, "issuer": self.issuer, "origin": self.origin, "alg": self.alg}

    def signer(self) -> c2pa.Signer:
        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(self.alg.encode(), self.chain, self.key, self.tsa_url))


def _algorithm(key: Any, where: str) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return "es256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ConfigurationError(f"{where}: the signing key must be ES256 (EC P-256) or Ed25519, not {type(key).__name__}")


def _common_name(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(found[0].value) if found else name.rfc4514_string()


def read_signing_key(cert_path: Path, key_path: Path, origin: str, tsa_url: str | None = None) -> SigningKey:
    """The key pair of two PEM files, checked; ``ConfigurationError`` names the file (never its content)."""
    try:
        chain = cert_path.read_bytes()
        key_pem = key_path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"Content Credentials: cannot read {exc.filename}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise ConfigurationError(f"Content Credentials: {cert_path} holds no PEM certificate chain") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(f"Content Credentials: {key_path} holds no unencrypted PEM private key") from None
    alg = _algorithm(key, str(key_path))
    if certs[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ConfigurationError(f"Content Credentials: the key of {key_path} is not the one {cert_path}'s first certificate certifies")
    return SigningKey(chain=chain, key=key_pem, alg=alg, origin=origin, subject=_common_name(certs[0].subject),
                      issuer=_common_name(certs[0].issuer), tsa_url=tsa_url)


@functools.cache
def _configured(cert: Path | None, key: Path | None, home_dir: Path, tsa_url: str | None) -> SigningKey | None:
    if (cert is None) != (key is None):
        given = "MEDIACONDUIT_C2PA_CERT" if cert is not None else "MEDIACONDUIT_C2PA_KEY"
        missing = "MEDIACONDUIT_C2PA_KEY" if cert is not None else "MEDIACONDUIT_C2PA_CERT"
        raise ConfigurationError(f"Content Credentials: {given} is set but {missing} is not; set both or neither")
    if cert is not None and key is not None:
        return read_signing_key(cert, key, "operator", tsa_url)
    if (home_dir / CERT_FILE).is_file() and (home_dir / KEY_FILE).is_file():
        return read_signing_key(home_dir / CERT_FILE, home_dir / KEY_FILE, "development", tsa_url)
    return None


def signing_key() -> SigningKey | None:
    """This worker's signing key: the operator's, else the development pair under ``home/credentials``, else
    None (nothing is signed). A key that is named but unusable is a ``ConfigurationError``."""
    settings = get_settings()
    return _configured(settings.c2pa_cert, settings.c2pa_key, settings.credentials_dir, settings.c2pa_tsa_url)


def signing_notice() -> tuple[bool, str]:
    """Whether media outputs are signed, and the line a worker logs once at start saying by whom or why not."""
    try:
        key = signing_key()
    except ConfigurationError as exc:
        return False, f"{exc}: media outputs are not signed"
    if key is None:
        return False, ("Content Credentials: no signing key (MEDIACONDUIT_C2PA_CERT/_KEY unset and no "
                       "'mediaconduit credentials init' pair under MEDIACONDUIT_HOME): media outputs are not signed")
    if key.origin == "development":
        return True, (f"Content Credentials: media outputs are signed by {key.subject!r}, the development certificate "
                      f"under {get_settings().credentials_dir} (trusted by no one outside this installation)")
    return True, f"Content Credentials: media outputs are signed by {key.subject!r} (issued by {key.issuer!r})"


def announce() -> None:
    signed, line = signing_notice()
    log.log(logging.INFO if signed else logging.WARNING, "%s", line)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "MediaConduit development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_development_credentials(directory: Path, *, days: int = 3650) -> SigningKey:
    """A development CA and a signing certificate it issues (ES256), written under ``directory``: the chain
    and the key the workers sign with, and the CA's certificate (``verify`` trusts it for this installation).
    The CA's key is not kept: nothing more can be issued under it. C2PA validators refuse a self-signed
    signing certificate, hence the two."""
    now = datetime.datetime.now(datetime.UTC)
    begin, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("MediaConduit development CA")
    no_usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(begin).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **no_usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("MediaConduit development signer")).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(begin).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **no_usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pem = serialization.Encoding.PEM
    key_path = directory / KEY_FILE
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / CERT_FILE).write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    (directory / CA_FILE).write_bytes(ca.public_bytes(pem))
    _configured.cache_clear()
    return read_signing_key(directory / CERT_FILE, key_path, "development")


# -- signing ----------------------------------------------------------------------------------------
@functools.cache
def signable_types() -> frozenset[str]:
    """The media types c2pa-python embeds a manifest in (JPEG, PNG, WebP, WAV, MP3, MP4, FLAC, …)."""
    return frozenset(t for t in c2pa.Builder.get_supported_mime_types() if "/" in t)


_local = threading.local()


def _context() -> c2pa.Context:
    """One c2pa context per thread (a thread pool signs from several)."""
    ctx = getattr(_local, "context", None)
    if ctx is None:
        ctx = _local.context = c2pa.Context(settings=c2pa.Settings.from_dict(_BUILD_SETTINGS))
    return ctx


@dataclass(frozen=True)
class Made:
    """What a manifest says of one output: how it was made and by what."""

    action: str
    """``c2pa.created``, ``c2pa.edited``, ``c2pa.transcoded`` or ``c2pa.converted``."""
    source_type: str | None
    """An IPTC term (``trainedAlgorithmicMedia``), or None when the provider declares ``none``."""
    agent: dict[str, Any]
    record: dict[str, Any]
    """The ``org.mediaconduit.record`` assertion's data."""


def action_of(output: Asset, inputs: list[BinaryAsset], declared: str | None) -> str:
    """``c2pa.created`` for output of no input media; else the model's declared action, else ``c2pa.edited``
    for media of the input's kind and ``c2pa.converted`` for another kind (a video's audio or frame)."""
    if not inputs:
        return "c2pa.created"
    if declared:
        return declared
    return "c2pa.edited" if inputs[0].type == output.type else "c2pa.converted"


def media_inputs(value: Any) -> list[BinaryAsset]:
    return [item for item in input_items(value) if isinstance(item, BinaryAsset)]


def manifest_definition(output: BinaryAsset, made: Made, ingredients: list[str]) -> dict[str, Any]:
    """The manifest the builder signs; ``ingredients`` are the labels of the input media added to it."""
    action: dict[str, Any] = {"action": made.action, "softwareAgent": made.agent}
    if made.source_type:
        action["digitalSourceType"] = IPTC + made.source_type
    actions: list[dict[str, Any]] = [action]
    if ingredients:
        # C2PA: a manifest with a parent ingredient opens it first; the change then names every input.
        action["parameters"] = {"ingredientIds": ingredients}
        actions.insert(0, {"action": "c2pa.opened", "parameters": {"ingredientIds": ingredients[:1]}})
    return {
        "claim_generator_info": [{"name": "mediaconduit-worker", "version": package_version()}],
        "title": f"{output.type} output",
        "format": output.mime_type,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}},
                       {"label": RECORD_LABEL, "data": made.record}],
    }


def _open(asset: BinaryAsset) -> IO[bytes]:
    return asset.open()


def sign(output: BinaryAsset, inputs: list[BinaryAsset], made: Made, key: SigningKey,
         store: BlobStore | None = None) -> tuple[BinaryAsset, dict[str, Any]]:
    """``output`` signed into the blob store as a new asset (same metadata), and the record's credentials.
    The file is read and written as streams; the unsigned original is left as it was."""
    store = store or BlobStore()
    label = f"urn:c2pa:{uuid.uuid4()}"
    definition = manifest_definition(output, made, [f"input-{i}" for i in range(len(inputs))])
    builder = c2pa.Builder.from_json({**definition, "label": label}, context=_context())
    ingredients = 0
    for i, item in enumerate(inputs):
        relationship = "parentOf" if i == 0 else "componentOf"
        with _open(item) as stream:
            builder.add_ingredient({"title": f"input {i}", "relationship": relationship, "label": f"input-{i}"},
                                   item.mime_type, stream)
        ingredients += 1
    target = store.incoming_file()
    try:
        with _open(output) as source, open(target, "w+b") as dest:
            signer = key.signer()
            try:
                builder.sign(signer, output.mime_type, source, dest)
            finally:
                signer.close()
                builder.close()
        uri, digest, size = store.adopt(target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    signed = type(output)(uri=uri, sha256=digest, size=size, mime_type=output.mime_type, metadata=output.metadata,
                          source=output.source)
    credentials = {"signed": True, "manifest": label, "format": output.mime_type, "action": made.action,
                   "digital_source_type": made.source_type, "signer": key.describe(),
                   "unsigned_sha256": output.sha256, "unsigned_size": output.size, "ingredients": ingredients}
    return signed, credentials


def prompt_digest(prompt: Any) -> str:
    return hashlib.sha256(canonical_json(prompt)).hexdigest()


def sign_served(served: Any, job_input: Any, prompt: dict[str, Any], task_id: str | None) -> tuple[Asset, dict[str, Any]]:
    """A job's media output signed (``worker/calls.Served``), with its record's credentials; an output that
    cannot be signed is returned as it was, the credentials saying why."""
    output: BinaryAsset = served.output
    if output.mime_type not in signable_types():
        return output, {"signed": False, "reason": f"C2PA defines no embedded manifest for {output.mime_type}"}
    try:
        key = signing_key()
    except ConfigurationError as exc:
        return output, {"signed": False, "reason": str(exc)}
    if key is None:
        return output, {"signed": False, "reason": "no signing key (MEDIACONDUIT_C2PA_CERT/_KEY unset, no "
                                                   "'mediaconduit credentials init' pair)"}
    manifest, model = served.loaded.manifest, served.runnable.id
    source = prompt.get("source") or {}
    declared = manifest.source_type_of(model)
    inputs = [item for item in media_inputs(job_input) if item.mime_type in signable_types()]
    made = Made(action=action_of(output, inputs, manifest.action_of(model)),
                source_type=None if declared == "none" else declared,
                agent={"name": f"{manifest.id}/{model}",
                       "version": source.get("commit") or source.get("version") or manifest.version},
                record={"task_id": task_id, "record_version": prompt.get("record_version"),
                        "generation_prompt_sha256": prompt_digest(prompt), "output_sha256": output.sha256})
    try:
        return sign(output, inputs, made, key)
    except c2pa.C2paError as exc:
        log.warning("Content Credentials: %s output of %s/%s not signed: %s", output.mime_type, manifest.id, model, exc)
        return output, {"signed": False, "reason": f"c2pa could not sign the {output.mime_type} output: {exc}"}
