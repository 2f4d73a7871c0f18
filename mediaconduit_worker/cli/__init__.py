"""The ``mediaconduit`` command line, one module per command group."""

import click

from .batch import batch
from .cache import cache
from .demo import demo
from .jobs import submit
from .monitor import flower, status
from .providers import providers
from .replay import replay
from .services import services
from .worker import broker, worker


@click.group()
def main() -> None:
    """MediaConduit Worker: run AI and media transforms on Celery + Redis."""


for _command in (batch, broker, cache, demo, flower, providers, replay, services, status, submit, worker):
    main.add_command(_command)

__all__ = ["main"]
