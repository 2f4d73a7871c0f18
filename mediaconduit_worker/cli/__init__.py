"""The ``mediaconduit`` command line, one module per command group."""

import click

from .batch import batch
from .blobs import blobs
from .cache import cache
from .cancel import cancel
from .credentials import credentials
from .demo import demo
from .gateway import gateway
from .get import get
from .jobs import submit
from .keys import keys
from .monitor import flower, status
from .output import Main
from .providers import providers
from .replay import replay
from .routes import routes
from .services import services
from .verify import verify
from .webhooks import webhooks
from .worker import broker, worker


@click.group(cls=Main)
@click.version_option(package_name="mediaconduit-worker", prog_name="mediaconduit")
@click.option("--debug", is_flag=True, envvar="MEDIACONDUIT_DEBUG",
              help="Show the traceback of a failure instead of its one-line error.")
def main(debug: bool) -> None:
    """MediaConduit Worker: run AI and media transforms on Celery + Redis.

    Exit codes: 0 all good, 1 a failure (or some item of a batch failed), 2 a usage error, 130 Ctrl-C.
    Shell completion: eval "$(_MEDIACONDUIT_COMPLETE=bash_source mediaconduit)" (zsh_source, fish_source).
    """


for _command in (batch, blobs, broker, cache, cancel, credentials, demo, flower, gateway, get, keys, providers, replay, routes,
                 services, status, submit, verify, webhooks, worker):
    main.add_command(_command)

__all__ = ["main"]
