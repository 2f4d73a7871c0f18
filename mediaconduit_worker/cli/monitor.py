"""``mediaconduit flower`` and ``mediaconduit status``: watching the cluster."""

from __future__ import annotations

import errno
import json
import os

import click

from .output import CommandError, error_line, table_console


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--address", default=None, help="Listen address (default MEDIACONDUIT_FLOWER_ADDRESS, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default MEDIACONDUIT_FLOWER_PORT, 5555).")
@click.pass_context
def flower(ctx: click.Context, address: str | None, port: int | None) -> None:
    """Flower on loopback, basic auth when MEDIACONDUIT_FLOWER_AUTH is set, Prometheus at /metrics.

    Extra arguments go to Flower (e.g. --max_tasks=100000).
    """
    from ..worker.broker import ensure_broker
    from ..worker.flower import flower_env

    ensure_broker()
    os.environ.update({k: v for k, v in flower_env().items() if k not in os.environ})
    if address:
        os.environ["FLOWER_ADDRESS"] = address
    if port:
        os.environ["FLOWER_PORT"] = str(port)
    from ..worker.app import app

    try:
        app.start(["flower", *ctx.args])
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        where = f"{os.environ.get('FLOWER_ADDRESS', '127.0.0.1')}:{os.environ.get('FLOWER_PORT', '5555')}"
        raise CommandError(f"cannot serve Flower on {where}: the port is in use (another Flower?); choose another "
                           "with --port or MEDIACONDUIT_FLOWER_PORT") from None


@click.command()
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds to wait for workers to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--queues", is_flag=True,
              help="Per queue: jobs queued, held by workers (reserved or running), slots and the scaling signal "
                   "(queued + held) / slots, from Redis alone (no worker needs to answer).")
def status(timeout: float, as_json: bool, queues: bool) -> None:
    """Workers, their queues, loaded providers and running services.

    Exit code 1 when no worker answered (--json still prints its empty list)."""
    from kombu.exceptions import OperationalError
    from rich.table import Table

    from ..worker.app import app
    from ..worker.status import cluster_status

    try:  # one try: kombu's own retries would spend seconds on a broker that is not there
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0)
    except OperationalError as exc:
        raise CommandError(error_line(exc)) from None
    if queues:
        _queue_loads(as_json)
        return
    workers = cluster_status(app, timeout)
    if as_json:
        click.echo(json.dumps(workers, indent=2, default=str))
    if not workers:
        raise CommandError(f"no worker answered within {timeout:g}s; start one with "
                           "`mediaconduit worker --capability text-to-text`")
    if as_json:
        return
    console = table_console()
    table = Table("worker", "queues", "pool", "slots", "active", "stuck", "providers", "services")
    for w in workers:
        providers = "\n".join(f"{p['id']} @ {(p.get('commit') or '')[:10]}" for p in w["providers"]) or "-"
        svc = w["services"] or {}
        services = ("\n".join(f"{c['service']} {c['status']} {' '.join(c['ports'])}" for c in svc.get("containers", []))
                    or ("-" if svc.get("available") else f"n/a ({svc.get('reason')})"))
        stuck = w["stuck"]
        table.add_row(w["worker"], "\n".join(w["queues"]), str(w["pool"]), str(w["concurrency"]), str(w["active"]),
                      f"{stuck['stuck']} ({stuck['abandoned_total']} in all)" if stuck["abandoned_total"] else "0",
                      providers, services)
    console.print(table)


def _queue_loads(as_json: bool) -> None:
    from rich.table import Table

    from ..worker.metrics import queue_loads

    loads = queue_loads()
    if as_json:
        click.echo(json.dumps([load.as_json() for load in loads], indent=2))
        return
    table = Table("queue", "queued", "held", "slots", "signal")
    for load in loads:
        table.add_row(load.queue, str(load.queued), str(load.held), str(load.slots), f"{load.signal:.2f}")
    table_console().print(table)
