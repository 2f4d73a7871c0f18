"""``mediaconduit webhooks``: a webhook dispatcher on its own, beside or instead of the gateways' own."""

from __future__ import annotations

import click


@click.command()
def webhooks() -> None:
    """Send the webhook outbox's events until stopped (Ctrl-C or SIGTERM). Every gateway runs a dispatcher
    already; more share the work through the outbox's consumer group, and a stopped one loses nothing."""
    import asyncio
    import signal
    import threading

    from ..gateway.dispatcher import Dispatcher
    from ..settings import get_settings
    from ..worker.redis_state import state_redis
    from .worker import connect_broker

    connect_broker()
    settings = get_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    dispatcher = Dispatcher(settings, state_redis(settings.effective_result_backend))
    click.echo(f"webhook dispatcher {dispatcher.name}: sending the outbox's events (Ctrl-C stops)", err=True)
    asyncio.run(dispatcher.run(stop))
    click.echo(f"webhook dispatcher {dispatcher.name}: stopped after {dispatcher.sent} deliveries", err=True)
