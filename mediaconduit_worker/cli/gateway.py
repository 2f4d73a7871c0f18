"""``mediaconduit gateway``: the HTTP API (``gateway/``) on uvicorn."""

from __future__ import annotations

import click

from .output import CommandError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8700, show_default=True, help="Port to listen on.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Gateway processes (all state is in Redis, so they share nothing else).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def gateway(host: str, port: int, workers: int, log_level: str) -> None:
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
    uvicorn.run("mediaconduit_worker.gateway.serve:app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, proxy_headers=False, server_header=False)
