"""What every command prints: JSON results and one-line errors."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import click

from ..errors import MediaConduitError


def print_json(data: Any) -> None:
    from rich.console import Console

    Console().print_json(json.dumps(data, default=str))


def table_console() -> Any:
    """A console for tables on stdout: the terminal's width there, and no width at all when piped (rich's
    fallback of 80 columns would cut every cell of a wide table)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=100_000)


class CommandError(click.ClickException):
    """A failed command: one line on stderr, ``error: …``, exit code 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=file is None)


class BadArgument(click.UsageError):
    """A bad argument: one line naming it and where the help is, exit code 2."""

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx else ""
        click.echo(f"error: {self.format_message()}{hint}", file=file, err=file is None)


def error_line(exc: Exception) -> str:
    """The message of a failure: ours name their culprit (a service's may end with its logs); a Redis that
    does not answer is named by its URL and setting; anything else is named by its type too, on one line."""
    if isinstance(exc, MediaConduitError):
        return str(exc)
    unreachable = _unreachable(exc)
    if unreachable:
        return unreachable
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _unreachable(exc: Exception) -> str | None:
    """A broker or state Redis that refused, closed or timed out, as what to do about it."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    from ..redaction import redact_url
    from ..settings import get_settings

    settings = get_settings()
    if isinstance(exc, OperationalError):
        url, setting = settings.effective_broker_url, "MEDIACONDUIT_BROKER_URL"
    elif isinstance(exc, (RedisConnectionError, RedisTimeout)):
        url = settings.effective_result_backend
        setting = "MEDIACONDUIT_RESULT_BACKEND" if settings.result_backend else "MEDIACONDUIT_BROKER_URL"
    else:
        return None
    cause = " ".join(str(exc).split()).rstrip(".")
    hint = ("start it with `mediaconduit broker start`" if settings.uses_embedded_broker
            else f"is it running, and is {setting} right?")
    return f"cannot reach Redis at {redact_url(url)} ({cause}); {hint}"


def _one_line(exc: click.ClickException) -> click.ClickException:
    if isinstance(exc, (CommandError, BadArgument, click.exceptions.NoArgsIsHelpError)):
        return exc
    if isinstance(exc, click.UsageError):
        return BadArgument(exc.format_message(), exc.ctx)
    return CommandError(exc.format_message())


INTERRUPTED = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT, as shells report it)."""
_ON_INTERRUPT = "mediaconduit.on_interrupt"


def on_interrupt(hint: str) -> None:
    """What the running command's Ctrl-C line adds: what goes on without it (jobs keep running) and how to
    pick it up again."""
    click.get_current_context().meta[_ON_INTERRUPT] = hint


class Main(click.Group):
    """The ``mediaconduit`` group: a failure of any command, or a bad argument, ends as one ``error: …``
    line and a non-zero exit code; the global ``--debug`` shows the traceback of a failure instead.
    Ctrl-C ends a command with one ``interrupted`` line and exit code 130."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise _one_line(exc) from None
        except click.exceptions.Exit:
            raise  # a subcommand's --help: click ends it itself
        except (KeyboardInterrupt, click.Abort):
            hint = ctx.meta.get(_ON_INTERRUPT)
            start = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C, or a progress bar's line
            click.echo(f"{start}error: interrupted{f'; {hint}' if hint else ''}", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise CommandError(error_line(exc)) from None
