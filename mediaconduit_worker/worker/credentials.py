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

import functools
import hashlib
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import IO, Any

import c2pa

from ..assets import Asset, BinaryAsset, input_items
from ..blobs import BlobStore
from ..errors import ConfigurationError
from ..record import package_version
from ..settings import get_settings
from .signatures import SigningKey, canonical_json, signing_key

log = logging.getLogger(__name__)

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
"""The IPTC digital source type vocabulary; a manifest's ``digitalSourceType`` names a term of it."""
RECORD_LABEL = "org.mediaconduit.record"
"""The assertion holding the digest of the job's generation prompt (its canonical JSON) and the task id."""
_BUILD_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}
"""No JPEG thumbnail in the manifest: decoding and scaling the media would cost more than the signature."""


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
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(key.alg.encode(), key.chain, key.key, key.tsa_url))
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
    size = output.size if output.size is not None else output.path().stat().st_size
    most = get_settings().c2pa_max_bytes
    if most and size > most:
        return output, {"signed": False, "reason": f"the {output.mime_type} output is {size} bytes, over "
                                                   f"MEDIACONDUIT_C2PA_MAX_BYTES ({most}): c2pa would hold it in memory "
                                                   "to sign it"}
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
