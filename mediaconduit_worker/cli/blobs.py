"""``mediaconduit blobs``: put files into the blob store, get blobs out as files, and ``gc`` (remove blobs
nothing refers to, after a grace period)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .output import CommandError, error_line


@click.group()
def blobs() -> None:
    """The content-addressed blob store (MEDIACONDUIT_BLOB_DIR)."""


@blobs.command("gc")
@click.option("--grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Keep blobs written or read this recently (default: MEDIACONDUIT_BLOB_GC_GRACE, 86400).")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def blobs_gc(grace: float | None, dry_run: bool, as_json: bool) -> None:
    """Remove blobs no stored result, cached result or queued job in Redis names, once older than the
    grace period, and writes a crash left unfinished. Exit code 0 when the sweep ran, 1 when it could not."""
    from ..blobs import BlobStore
    from ..worker.blobgc import collect, redis_clients

    try:
        sweep = collect(BlobStore(), redis_clients(), grace, dry_run)
    except Exception as exc:  # Redis down, not Redis, an unreadable store: one line, exit code 1
        raise CommandError(f"blob gc: {error_line(exc)}") from None
    if as_json:
        click.echo(json.dumps(sweep.as_dict()))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(sweep.removed)} blobs ({sweep.removed_bytes / 1048576:.1f} MiB) and "
               f"{sweep.partial_removed} unfinished writes; kept {sweep.referenced} referenced and {sweep.young} "
               f"younger than {sweep.grace:g} s ({sweep.keys_scanned} Redis keys read)")


@blobs.command("put")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print each file's asset JSON (its type by content), one a line.")
def blobs_put(files: tuple[Path, ...], as_json: bool) -> None:
    """Copy FILEs into the blob store and print each one's blob://sha256/… reference, one a line, in order.

    A file the store holds already is not written again. With --json, each line is the file's asset
    object (type audio, image or video by its content), ready for a job's input or a JSONL line.
    """
    from ..batch.files import file_asset, put_file
    from ..blobs import BlobStore
    from ..errors import InvalidInputError

    store = BlobStore()
    for path in files:
        try:
            if as_json:
                click.echo(json.dumps(file_asset(store, path)[0]))
            else:
                click.echo(put_file(store, path)[0])
        except (InvalidInputError, OSError) as exc:
            raise CommandError(error_line(exc) if isinstance(exc, InvalidInputError) else f"{path}: {exc.strerror}") from None


@blobs.command("get")
@click.argument("ref", metavar="blob://sha256/HEX")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="File to write ('-': standard output).")
def blobs_get(ref: str, output: Path) -> None:
    """Write the bytes of a blob to a file, checked against their digest."""
    from ..batch.files import copy_blob
    from ..errors import InvalidInputError

    target = None if str(output) == "-" else output
    tmp = None if target is None else target.with_name(f".{target.name}.part")
    try:
        copy_blob(ref, tmp)
        if tmp is not None and target is not None:
            os.replace(tmp, target)
    except InvalidInputError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
