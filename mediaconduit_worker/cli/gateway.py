"""``mediaconduit gateway``: the HTTP API (``gateway/``) on uvicorn."""

from __future__ import annotations

import click

from ..settings import get_settings
from .output import CommandError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8700, show_default=True, help="Port to listen on.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Gateway processes (all state is in Redis, so they share nothing else).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics of every gateway process on this port "
                   "(default MEDIACONDUIT_METRICS_PORT; unset: none recorded).")
def gateway(host: str, port: int, workers: int, log_level: str, metrics_port: int | None) -> None:
    """Serve the HTTP API: jobs, files, events for API tenants (`mediaconduit keys create`). OpenAPI at
    /openapi.json. Needs the broker up (`mediaconduit broker start`, or MEDIACONDUIT_BROKER_URL)."""
    import socket

    import uvicorn

    from .worker import connect_broker

    connect_broker()
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port} (--host, --port): {exc.strerror}") from None
    metrics_port = metrics_port if metrics_port is not None else get_settings().metrics_port
    if metrics_port is not None:
        serve_metrics(metrics_port)
    uvicorn.run("mediaconduit_worker.gateway.serve:app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, proxy_headers=False, server_header=False)


def serve_metrics(port: int) -> None:
    """One directory every gateway process records into (they inherit ``PROMETHEUS_MULTIPROC_DIR``), served
    from this process on ``port``; one error line when the port cannot be had."""
    from ..worker.metrics import prepare

    path = prepare(port)
    from ..gateway.metrics import serve

    address = get_settings().metrics_address
    try:
        serve(port, address, path)
    except OSError as exc:
        raise CommandError(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc} "
                           "(--metrics-port, MEDIACONDUIT_METRICS_PORT, MEDIACONDUIT_METRICS_ADDRESS)") from None
