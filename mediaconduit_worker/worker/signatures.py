"""The signing key of this installation and the detached signature of result records
(``docs/credentials.md``).

One key signs both: the Content Credentials embedded in media outputs (``worker/credentials.py``, with
c2pa-python) and every result record, so a text output has provenance too. The key is the operator's
(``MEDIACONDUIT_C2PA_CERT``/``_KEY``, ES256 or Ed25519), else the development pair ``mediaconduit
credentials init`` made under ``home/credentials``; with neither, nothing is signed. It is read once per
process and never shown. This module needs ``cryptography`` alone: a text job never loads c2pa.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import ConfigurationError
from ..settings import get_settings

log = logging.getLogger(__name__)

CERT_FILE, KEY_FILE, CA_FILE = "signer-chain.pem", "signer-key.pem", "ca.pem"
"""The files of ``home/credentials`` that ``credentials init`` writes (the CA's own key is not kept)."""


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


# -- the record's detached signature ----------------------------------------------------------------
SIGNATURE = "signature"
"""The ``metadata`` field holding a record's signature; the signature is over the record without it."""


def record_payload(record: dict[str, Any]) -> bytes:
    """The bytes a record's signature is over: its canonical JSON without ``metadata.signature``."""
    metadata = {k: v for k, v in record.get("metadata", {}).items() if k != SIGNATURE}
    return canonical_json({**record, "metadata": metadata})


@functools.cache
def _private_key(pem: bytes) -> Any:
    return serialization.load_pem_private_key(pem, password=None)


def signed_record(record: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """``record`` with ``metadata.signature``: the algorithm, the signer, its certificate (DER, base64) and
    the signature (ES256: DER-encoded ECDSA over SHA-256; Ed25519: raw) over ``record_payload``."""
    private = _private_key(key.key)
    payload = record_payload(record)
    value = private.sign(payload, ec.ECDSA(hashes.SHA256())) if key.alg == "es256" else private.sign(payload)
    signature = {**key.describe(), "certificate": _certificate_der(key.chain), "value": base64.b64encode(value).decode()}
    return {**record, "metadata": {**record["metadata"], SIGNATURE: signature}}


@functools.cache
def _certificate_der(chain: bytes) -> str:
    return base64.b64encode(x509.load_pem_x509_certificates(chain)[0].public_bytes(serialization.Encoding.DER)).decode()


@dataclass(frozen=True)
class RecordCheck:
    """What checking a record's signature found: ``problems`` empty means the signature holds."""

    signed: bool
    signer: dict[str, Any] | None
    trusted: bool | None
    """Whether the signing certificate was issued by one of the CAs given (None when none were given)."""
    problems: list[str]


def check_record(record: dict[str, Any], trusted: list[x509.Certificate] | None = None) -> RecordCheck:
    """The record's signature checked against its certificate, and that certificate against ``trusted``."""
    signature = record.get("metadata", {}).get(SIGNATURE)
    if not isinstance(signature, dict):
        return RecordCheck(False, None, None, ["the record carries no signature (metadata.signature)"])
    signer = {k: signature.get(k) for k in ("subject", "issuer", "origin", "alg")}
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(signature["certificate"], validate=True))
        value = base64.b64decode(signature["value"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        return RecordCheck(True, signer, None, [f"metadata.signature is malformed: {type(exc).__name__}: {exc}"])
    public = cert.public_key()
    payload = record_payload(record)
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(value, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(value, payload)
        else:
            return RecordCheck(True, signer, None, [f"the record's certificate has a {type(public).__name__} key"])
    except InvalidSignature:
        return RecordCheck(True, signer, None, ["the record's signature does not match its content: the record "
                                                "was changed after it was signed"])
    problems = []
    if _common_name(cert.subject) != signer["subject"]:
        problems.append(f"metadata.signature names {signer['subject']!r}, its certificate {_common_name(cert.subject)!r}")
    issued = None
    if trusted is not None:
        issued = any(_issued_by(cert, ca) for ca in trusted)
    return RecordCheck(True, signer, issued, problems)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
