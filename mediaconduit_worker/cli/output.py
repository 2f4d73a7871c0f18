"""What every command prints: JSON results and one-line errors."""

from __future__ import annotations

import json
from typing import IO, Any

import click

from ..errors import MediaConduitError


def print_json(data: Any) -> None:
    from rich.console import Console

    Console().print_json(json.dumps(data, default=str))


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
    """The message of a failure: ours name their culprit (a service's may end with its logs); anything
    else is named by its type too, on one line."""
    if isinstance(exc, MediaConduitError):
        return str(exc)
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _one_line(exc: click.ClickException) -> click.ClickException:
    if isinstance(exc, (CommandError, BadArgument, click.exceptions.NoArgsIsHelpError)):
        return exc
    if isinstance(exc, click.UsageError):
        return BadArgument(exc.format_message(), exc.ctx)
    return CommandError(exc.format_message())


class Main(click.Group):
    """The ``mediaconduit`` group: a failure of any command, or a bad argument, ends as one ``error: …``
    line and a non-zero exit code; the global ``--debug`` shows the traceback of a failure instead."""

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
        except (click.exceptions.Exit, click.Abort):
            raise  # a subcommand's --help, or Ctrl-C at a prompt: click ends these itself
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise CommandError(error_line(exc)) from None
