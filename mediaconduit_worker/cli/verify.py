"""``mediaconduit verify FILE|RESULT.json|TASK_ID``: a file's Content Credentials and a record's signature
checked, and the two against each other (``docs/credentials.md``).

The manifest is read with the official reader (``c2pa.Reader``), trusting this installation's development CA
and any ``--trust`` certificates; the record's detached signature with ``cryptography``
(``worker/signatures.py``). Whatever no longer matches is named, one line each.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from pathlib import Path
from typing import Any

import click

from .output import BadArgument

FAILED = 1
"""The exit code when something checked does not hold (0 when everything does; a bad argument exits 2)."""


def _record_of(ref: str) -> dict[str, Any]:
    from .replay import load_result

    try:
        record = load_result(ref, timeout=10.0)
    except click.ClickException as exc:
        raise BadArgument(exc.format_message()) from None
    if not isinstance(record.get("asset"), dict) or not isinstance(record.get("metadata"), dict):
        raise BadArgument(f"{ref}: not a result record (no 'asset' and 'metadata' objects)")
    return record


def _is_json(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(64).lstrip()[:1] == b"{"


def _trust_anchors(extra: tuple[Path, ...]) -> list[bytes]:
    """This installation's development CA (when ``credentials init`` made one) and the ``--trust`` files."""
    from ..settings import get_settings
    from ..worker.signatures import CA_FILE

    own = get_settings().credentials_dir / CA_FILE
    anchors = [own.read_bytes()] if own.is_file() else []
    for path in extra:
        try:
            anchors.append(path.read_bytes())
        except OSError as exc:
            raise BadArgument(f"--trust {path}: {exc.strerror}") from None
    return anchors


def _action(entry: dict[str, Any]) -> dict[str, Any]:
    shown = {"action": entry.get("action")}
    agent = entry.get("softwareAgent")
    if isinstance(agent, dict):
        shown["agent"] = f"{agent.get('name')}@{agent.get('version')}" if agent.get("version") else agent.get("name")
    if entry.get("digitalSourceType"):
        shown["digital_source_type"] = str(entry["digitalSourceType"]).rsplit("/", 1)[-1]
    return shown


def _chain(store: dict[str, Any]) -> list[dict[str, Any]]:
    """Each manifest of the file from the active one down to the first input: its signer, actions and
    ingredients (a manifest an ingredient keeps is followed in turn)."""
    manifests = store.get("manifests") or {}
    todo, seen, chain = [store.get("active_manifest")], set(), []
    while todo:
        label = todo.pop(0)
        if label is None or label in seen or label not in manifests:
            continue
        seen.add(label)
        manifest = manifests[label]
        actions = [a for item in manifest.get("assertions", []) if item.get("label", "").startswith("c2pa.actions")
                   for a in item.get("data", {}).get("actions", [])]
        ingredients = [{"title": i.get("title"), "format": i.get("format"), "relationship": i.get("relationship"),
                        "manifest": i.get("active_manifest")} for i in manifest.get("ingredients", [])]
        info = manifest.get("signature_info") or {}
        chain.append({"manifest": label, "signer": info.get("common_name"), "issuer": info.get("issuer"),
                      "actions": [_action(a) for a in actions], "ingredients": ingredients})
        todo += [i["manifest"] for i in ingredients]
    return chain


def check_file(path: Path, mime: str, anchors: list[bytes]) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """The file's credentials as reported, its active manifest (None without one), and what fails."""
    import c2pa

    from ..batch.files import file_digest

    settings = {"trust": {"trust_anchors": b"".join(anchors).decode()}} if anchors else {}
    context = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
    report: dict[str, Any] = {"path": str(path), "mime_type": mime, "sha256": file_digest(path)[0]}
    try:
        with path.open("rb") as stream:
            reader = c2pa.Reader(mime, stream, context=context)
            store = json.loads(reader.json())
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as exc:
        report["state"] = None
        return report, None, [f"{path} carries no Content Credentials c2pa can read ({' '.join(str(exc).split())})"]
    failures = [f.get("code") for f in (results.get("activeManifest") or {}).get("failure", [])]
    active = store.get("manifests", {}).get(store.get("active_manifest")) or {}
    report.update(state=state, trusted=state == "Trusted", failures=failures, manifest=store.get("active_manifest"),
                  chain=_chain(store))
    problems = [] if state in ("Valid", "Trusted") else [
        f"{path}'s Content Credentials are {state}: {', '.join(c for c in failures if c != 'signingCredential.untrusted')}"]
    return report, active, problems


def _assertion(manifest: dict[str, Any], label: str) -> dict[str, Any]:
    return next((a.get("data") or {} for a in manifest.get("assertions", []) if a.get("label") == label), {})


def check_against(record: dict[str, Any], file_sha: str | None, manifest: dict[str, Any] | None) -> list[str]:
    """What of the record the file no longer matches: the bytes, the manifest it names, the digests the
    manifest holds (the provider's bytes, the generation prompt)."""
    from ..worker.credentials import RECORD_LABEL
    from ..worker.signatures import canonical_json

    asset, meta = record["asset"], record["metadata"]
    prompt = meta.get("generation_prompt") or {}
    problems = []
    if file_sha is None:  # a text output: its content is the asset
        content = asset.get("content")
        if isinstance(content, str) and prompt.get("output_digest") not in (None, hashlib.sha256(content.encode()).hexdigest()):
            problems.append("the record's text content is not what its generation prompt's output_digest names")
        return problems
    if file_sha != asset.get("sha256"):
        problems.append(f"the file's bytes (sha256 {file_sha}) are not the record's asset (sha256 {asset.get('sha256')})")
    credentials = meta.get("credentials") or {}
    if not credentials.get("signed") or manifest is None:
        return problems
    if manifest.get("label") != credentials.get("manifest"):
        problems.append(f"the file's manifest {manifest.get('label')} is not the record's {credentials.get('manifest')}")
    held = _assertion(manifest, RECORD_LABEL)
    if held.get("output_sha256") != credentials.get("unsigned_sha256"):
        problems.append("the manifest's output_sha256 is not the record's credentials.unsigned_sha256")
    if held.get("generation_prompt_sha256") != hashlib.sha256(canonical_json(prompt)).hexdigest():
        problems.append("the manifest's generation_prompt_sha256 is not the digest of the record's generation prompt")
    return problems


def _media_type(path: Path, given: str | None, record: dict[str, Any] | None) -> str:
    mime = given or (record or {}).get("asset", {}).get("mime_type") or mimetypes.guess_type(path.name)[0]
    if not mime:
        raise BadArgument(f"cannot tell the media type of {path} from its name; pass --type")
    return str(mime)


def verify_target(target: str, record_ref: str | None, media_type: str | None, trust: tuple[Path, ...]) -> dict[str, Any]:
    """The report of one target: what was checked, what it found, and ``problems`` (empty: verified)."""
    from ..blobs import BlobStore, blob_digest
    from ..worker.signatures import check_record

    path = Path(target)
    record = _record_of(record_ref) if record_ref else None
    file: Path | None = None
    if path.is_file() and _is_json(path) or not path.exists():
        if record is not None:
            raise BadArgument(f"{target} is a record already; --record goes with a media FILE")
        record = _record_of(target)
        digest = blob_digest(str(record["asset"].get("uri") or ""))
        if digest is not None:
            file = BlobStore().path_for(digest)
            if not file.is_file():
                raise BadArgument(f"{target}: its asset {record['asset']['uri']} is not in the blob store ({file.parent.parent.parent})")
    else:
        file = path
    report: dict[str, Any] = {"target": target}
    problems: list[str] = []
    manifest = None
    anchors = _trust_anchors(trust)
    if file is not None:
        report["file"], manifest, found = check_file(file, _media_type(file, media_type, record), anchors)
        if record is None or (record["metadata"].get("credentials") or {}).get("signed"):
            problems += found
    if record is not None:
        from cryptography import x509

        certs = [c for pem in anchors for c in x509.load_pem_x509_certificates(pem)]
        checked = check_record(record, certs or None)
        report["record"] = {"signed": checked.signed, "signer": checked.signer, "trusted": checked.trusted,
                            "credentials": record["metadata"].get("credentials")}
        problems += checked.problems
        problems += check_against(record, report["file"]["sha256"] if file is not None else None, manifest)
    report["verified"] = not problems
    report["problems"] = problems
    return report


def _show(report: dict[str, Any]) -> None:
    file, record = report.get("file"), report.get("record")
    if file:
        trust = "trusted" if file.get("trusted") else "not trusted here"
        click.echo(f"file: {file['path']} ({file['mime_type']}, sha256 {file['sha256']})")
        if file.get("state"):
            click.echo(f"  Content Credentials: {file['state']} ({trust}), manifest {file['manifest']}")
        for depth, step in enumerate(file.get("chain", [])):
            actions = ", ".join(a["action"] + (f" by {a['agent']}" if a.get("agent") else "") +
                                (f" ({a['digital_source_type']})" if a.get("digital_source_type") else "")
                                for a in step["actions"])
            click.echo(f"  {'  ' * depth}{step['manifest']}: signed by {step['signer']!r} (issued by {step['issuer']!r}); {actions}")
            for ing in step["ingredients"]:
                kept = f"its manifest {ing['manifest']}" if ing["manifest"] else "no manifest"
                click.echo(f"  {'  ' * depth}  ingredient {ing['title']!r} ({ing['format']}, {ing['relationship']}): {kept}")
    if record:
        if record["signed"] and record["signer"]:
            signer = record["signer"]
            trust = {True: "trusted", False: "not issued by a trusted CA", None: "no CA to check it against"}[record["trusted"]]
            click.echo(f"record: signed by {signer['subject']!r} (issued by {signer['issuer']!r}, {signer['alg']}; {trust})")
        else:
            click.echo("record: not signed")
    for problem in report["problems"]:
        click.echo(f"FAIL: {problem}")
    click.echo("verified" if report["verified"] else "not verified")


@click.command()
@click.argument("target", metavar="FILE|RESULT.json|TASK_ID")
@click.option("--record", "record_ref", metavar="RESULT.json|TASK_ID", default=None,
              help="The record FILE should match: its bytes, manifest and digests.")
@click.option("--type", "media_type", metavar="MIME", default=None, help="FILE's media type (default: from its name).")
@click.option("--trust", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="A PEM file of CA certificates to trust beside this installation's development CA (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(target: str, record_ref: str | None, media_type: str | None, trust: tuple[Path, ...], as_json: bool) -> None:
    """Check a file's Content Credentials, a result record's signature, and each against the other.

    A media FILE: its C2PA manifest's validity, who signed it, the chain of actions and ingredients down to
    the first input. A RESULT.json or TASK_ID: the record's signature, and the asset it names (from the blob
    store) against it. Exit code 0 when everything checked holds, 1 when something does not (each named),
    2 for a bad argument.
    """
    report = verify_target(target, record_ref, media_type, trust)
    if as_json:
        click.echo(json.dumps(report))
    else:
        _show(report)
    if not report["verified"]:
        raise click.exceptions.Exit(FAILED)

