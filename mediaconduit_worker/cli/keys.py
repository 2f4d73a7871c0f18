"""``mediaconduit keys``: API tenants, their keys and webhook secrets for the HTTP gateway (``mediaconduit gateway``)."""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING

import click

from .output import CommandError, error_line, table_console

if TYPE_CHECKING:
    from ..gateway.tenants import KeyStore


def _store() -> KeyStore:
    from ..gateway.tenants import KeyStore
    from ..settings import get_settings
    from ..worker.redis_state import state_redis
    from .worker import connect_broker

    connect_broker()
    return KeyStore(state_redis(get_settings().effective_result_backend))


@click.group()
def keys() -> None:
    """API keys of the HTTP gateway's tenants. Only a key's SHA-256 is stored; a key is shown once."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name (letters, digits, '_', '.', '-').")
@click.option("--budget-usd", type=click.FloatRange(min=0), default=None,
              help="USD all of the tenant's jobs may spend together (default: unlimited).")
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Jobs the tenant may create per minute.")
@click.option("--json", "as_json", is_flag=True, help='Print {"tenant": ..., "key": ...} only.')
def keys_create(tenant: str, budget_usd: float | None, rpm: int | None, as_json: bool) -> None:
    """Make a key for TENANT (created if new; --budget-usd and --rpm update it). The key is printed once,
    as the last line."""
    from ..gateway.tenants import TenantError

    try:
        found, key, key_id = _store().create(tenant, budget_usd, rpm)
    except TenantError as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant") from None
    if as_json:
        click.echo(json.dumps({"tenant": found.name, "key": key, "key_id": key_id}))
        return
    budget = f"${found.budget_usd:g}" if found.budget_usd is not None else "unlimited"
    rate = f"{found.rpm}/min" if found.rpm is not None else "unlimited"
    click.echo(f"tenant {found.name}: key id {key_id}, budget {budget}, rate {rate}; the key (shown only now):", err=True)
    click.echo(key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def keys_list(as_json: bool) -> None:
    """Every key by its id (never the key itself), with its tenant's budget, spend and rate."""
    from ..gateway.tenants import Tenant
    from ..worker.limits import RoutingState

    store = _store()
    rows = store.rows()
    state = RoutingState(store.redis)
    for row in rows:
        row["spent_usd"] = state.spend(f"batch:{Tenant(row['tenant']).spend_scope}")[0]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    from rich.table import Table

    table = Table("tenant", "key id", "created", "budget", "spent", "rpm")
    for row in rows:
        created = datetime.datetime.fromtimestamp(row["created"], datetime.UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(row["tenant"], row["key_id"], created,
                      "-" if row["budget_usd"] is None else f"${row['budget_usd']:g}", f"${row['spent_usd']:.4f}",
                      "-" if row["rpm"] is None else str(row["rpm"]))
    table_console().print(table)


@keys.command("revoke")
@click.argument("key_ids", nargs=-1, required=True, metavar="KEY_ID|KEY|tenant:NAME...")
def keys_revoke(key_ids: tuple[str, ...]) -> None:
    """Revoke keys by id (from `keys list`, 6+ characters), whole, or all of a tenant's (tenant:NAME).
    Exits 1 when one matched no key."""
    from ..gateway.tenants import TenantError

    store = _store()
    missing: list[str] = []
    for wanted in key_ids:
        try:
            revoked = store.revoke(wanted)
        except TenantError as exc:
            raise CommandError(error_line(exc)) from None
        if not revoked:
            missing.append(wanted)
        for key_id in revoked:
            click.echo(f"revoked {key_id}")
    if missing:
        raise CommandError(f"no key matches {', '.join(missing)} (`mediaconduit keys list` shows them)")


@keys.command("webhook-secret")
@click.option("--tenant", required=True, help="Tenant name.")
@click.option("--rotate", is_flag=True, help="Replace the secret: deliveries from now on are signed with the new one.")
def keys_webhook_secret(tenant: str, rotate: bool) -> None:
    """The whsec_ secret TENANT's webhooks are signed with (Standard Webhooks), printed as the last line;
    made on first use. Exits 1 for an unknown tenant."""
    from ..gateway.tenants import TenantError

    try:
        secret = _store().webhook_secret(tenant, rotate=rotate)
    except TenantError as exc:
        raise CommandError(error_line(exc)) from None
    click.echo(f"tenant {tenant}: {'a new' if rotate else 'the'} webhook signing secret "
               "(verify webhook-signature with it):", err=True)
    click.echo(secret)
