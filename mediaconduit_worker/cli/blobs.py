"""``mediaconduit blobs gc``: remove blobs nothing refers to, after a grace period."""

from __future__ import annotations

import json

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
