"""``mediaconduit credentials init|show``: the key that signs media outputs' Content Credentials."""

from __future__ import annotations

import json

import click


@click.group()
def credentials() -> None:
    """Content Credentials (C2PA) signing: the operator's key (MEDIACONDUIT_C2PA_CERT/_KEY) or a development pair."""


@credentials.command("init")
@click.option("--force", is_flag=True, help="Replace a pair made before (outputs it signed stay valid, by the old CA).")
def credentials_init(force: bool) -> None:
    """Make a development CA and a signing certificate under MEDIACONDUIT_HOME/credentials, which workers sign
    with when MEDIACONDUIT_C2PA_CERT/_KEY are unset. Trusted by no one outside this installation."""
    from ..settings import get_settings
    from ..worker.signatures import CERT_FILE, make_development_credentials

    folder = get_settings().credentials_dir
    if (folder / CERT_FILE).exists() and not force:
        raise click.ClickException(f"{folder} already holds a signing pair; pass --force to replace it")
    key = make_development_credentials(folder)
    click.echo(f"made {key.subject!r} (issued by {key.issuer!r}, {key.alg}) in {folder}; workers started from now "
               "sign media outputs with it. It is a development certificate: C2PA validators elsewhere report "
               "it untrusted; set MEDIACONDUIT_C2PA_CERT/_KEY for a real one.")


@credentials.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def credentials_show(as_json: bool) -> None:
    """Who signs media outputs here (never the key), or that nothing is signed."""
    from ..worker.signatures import signing_key, signing_notice

    signed, line = signing_notice()
    if as_json:
        key = signing_key() if signed else None
        click.echo(json.dumps({"signed": signed, "signer": key.describe() if key else None, "notice": line}))
    else:
        click.echo(line)
