"""``mediaconduit services ls | stop ID | logs ID``: the Docker services workers started."""

from __future__ import annotations

import time

import click

from ..errors import ServiceError
from .output import print_json, table_console


def _registry():  # type: ignore[no-untyped-def]
    from ..services import get_service_registry

    return get_service_registry()


def _one(ident: str, all_scopes: bool = False):  # type: ignore[no-untyped-def]
    found = _registry().find(ident, all_scopes)
    if not found:
        raise click.ClickException(f"no MediaConduit service container matches {ident!r} (see `mediaconduit services ls`)")
    return found


@click.group()
def services() -> None:
    """Docker services started for providers (id, container name, source URL or container id)."""


@services.command("ls")
@click.option("--all-scopes", is_flag=True, help="Also list containers of other MEDIACONDUIT_HOMEs on this engine.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def services_ls(all_scopes: bool, as_json: bool) -> None:
    """Running and stopped service containers, with their real host ports, source commits and limits."""
    from rich.table import Table

    from ..services import describe

    try:
        registry = _registry()
        rows = []
        for container in registry.managed(all_scopes):
            row = describe(container)
            row["idle_s"] = round(time.time() - registry.last_used(container))
            rows.append(row)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(rows)
        return
    table = Table("SERVICE", "CONTAINER", "STATUS", "PORTS", "COMMIT", "LIMITS", "IDLE")
    for r in rows:
        table.add_row(r["service"], r["container"], r["status"], ", ".join(r["ports"]), r["commit"],
                      _limits(r["limits"]), f"{r['idle_s']}s")
    table_console().print(table if rows else "no services")


def _limits(limits: dict[str, float | None]) -> str:
    """``1024M 1cpu 256pids``; ``-`` for a limit the container runs without."""
    memory, cpus, pids = limits["memory"], limits["cpus"], limits["pids"]
    return " ".join([f"{memory / 1048576:.0f}M" if memory else "-", f"{cpus:g}cpu" if cpus else "-",
                     f"{pids:.0f}pids" if pids else "-"])


@services.command("stop")
@click.argument("ident")
def services_stop(ident: str) -> None:
    """Stop and remove a service's container; the next job that needs it starts it again."""
    try:
        _one(ident)
        for name in _registry().stop(ident):
            click.echo(f"stopped {name}")
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None


@services.command("logs")
@click.argument("ident")
@click.option("--tail", "-n", type=int, default=100, show_default=True, help="Lines from the end.")
def services_logs(ident: str, tail: int) -> None:
    """The container's recent output."""
    try:
        for container in _one(ident):
            if len(_one(ident)) > 1:
                click.echo(f"==> {container.name} <==")
            click.echo(container.logs(tail=tail).decode(errors="replace"), nl=False)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None


@services.command("reap")
@click.option("--idle", type=float, default=None, help="Seconds unused (default MEDIACONDUIT_SERVICE_IDLE_TIMEOUT).")
def services_reap(idle: float | None) -> None:
    """Stop services nobody used for the idle timeout (workers also do this on their own)."""
    try:
        for name in _registry().reap_idle(idle):
            click.echo(f"stopped idle {name}")
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
