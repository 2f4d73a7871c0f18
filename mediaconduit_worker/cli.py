"""``mediaconduit`` command line: workers, the embedded broker, the demo, one-off jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from .capabilities import capability
from .settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def _print_json(data: Any) -> None:
    from rich.console import Console

    Console().print_json(json.dumps(data, default=str))


@click.group()
def main() -> None:
    """MediaConduit Worker: run AI and media transforms on Celery + Redis."""


@main.command()
@click.option("--capability", "capabilities", multiple=True, required=True, help="Queue(s) to serve, e.g. text-to-text.")
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes (default: CPU count).")
@click.option("--loglevel", "-l", default="INFO")
@click.option("--name", "-n", default=None, help="Node name (default: <capabilities>@%h).")
@click.option("--no-default-queue", is_flag=True, help="Do not also serve the default queue.")
def worker(capabilities: tuple[str, ...], concurrency: int | None, loglevel: str, name: str | None, no_default_queue: bool) -> None:
    """Start a worker pool for the given capabilities."""
    from .celery_app import DEFAULT_QUEUE, app

    try:
        queues = [capability(c).value for c in capabilities]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--capability") from None
    if not no_default_queue:
        queues.append(DEFAULT_QUEUE)
    argv = ["worker", "-Q", ",".join(queues), "-l", loglevel, "-n", name or f"{'+'.join(queues[:3])}@%h"]
    if concurrency:
        argv += ["-c", str(concurrency)]
    app.worker_main(argv)


@main.group()
def broker() -> None:
    """The embedded default Redis."""


@broker.command("start")
def broker_start() -> None:
    from .broker import EmbeddedRedis

    click.echo(EmbeddedRedis.from_settings().ensure_started())


@broker.command("stop")
def broker_stop() -> None:
    from .broker import EmbeddedRedis

    click.echo("stopped" if EmbeddedRedis.from_settings().stop() else "not running")


@main.command()
@click.argument("input")
@click.option("--provider", required=True, help="Provider URL.")
@click.option("--model", required=True)
@click.option("--option", "-o", "options", multiple=True, help="key=value (value parsed as JSON when it can be).")
@click.option("--timeout", type=float, default=120.0)
def submit(input: str, provider: str, model: str, options: tuple[str, ...], timeout: float) -> None:
    """Send one transform and print its result."""
    from .broker import ensure_broker
    from .tasks import transform

    ensure_broker()
    _print_json(transform.delay(input, provider, model, _parse_options(options)).get(timeout=timeout))


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--option")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


@main.group()
def providers() -> None:
    """Provider sources and their pinned commits."""


@providers.command("show")
@click.argument("url")
def providers_show(url: str) -> None:
    """Fetch (or reuse) a provider and print its manifest and pinned source."""
    from .registry import get_registry

    manifest, checkout = get_registry().manifest(url)
    _print_json({"source": checkout.describe(), "manifest": manifest.model_dump(mode="json", by_alias=True)})


@providers.command("update")
@click.argument("url")
def providers_update(url: str) -> None:
    """Fetch a provider's ref again and move its pin."""
    from .sources import SourceCache, check_allowed, parse_source

    check_allowed(url)
    _print_json(SourceCache().materialise(parse_source(url), update=True).describe())


def start_worker_process(capabilities: list[str], concurrency: int = 1, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """A worker in its own process (used by the demo; the tests have their own helper)."""
    cmd = [sys.executable, "-m", "mediaconduit_worker.cli", "worker", "-c", str(concurrency), "-l", "INFO"]
    for cap in capabilities:
        cmd += ["--capability", cap]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_workers(count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
    from .celery_app import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5)
        if len(replies) >= count:
            return replies
    raise TimeoutError(f"{count} worker(s) did not answer within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Warm shutdown (SIGTERM lets Celery finish the current job), SIGKILL if it hangs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@main.command()
def demo() -> None:
    """The main job on the embedded default: broker, worker, a transform and a chain, printed."""
    from rich.console import Console

    from .broker import EmbeddedRedis, ensure_broker
    from .tasks import transform

    console = Console()
    settings = get_settings()
    embedded = EmbeddedRedis.from_settings(settings) if settings.uses_embedded_broker else None
    was_running = embedded.ping() if embedded else True
    console.print(f"[bold]broker[/]: {ensure_broker()}" + (" (embedded)" if embedded else ""))
    settings.home.mkdir(parents=True, exist_ok=True)
    log_path = settings.home / "demo-worker.log"
    proc = start_worker_process(["text-to-text"], log_path=log_path)
    try:
        with console.status("starting a text-to-text worker"):
            wait_for_workers()
        cowsay = str(REPO_ROOT / "providers" / "cowsay-local-provider")
        echo = str(REPO_ROOT / "providers" / "echo-provider")
        with console.status("cowsay-local-provider: first use installs its dependencies"):
            result = transform.delay("Hello from MediaConduit", cowsay, "cowsay-default", {"animal": "tux"}).get(timeout=300)
        console.print("[bold]transform[/] cowsay-default (tux):")
        console.print(result["asset"]["content"], markup=False, highlight=False)
        console.print("[bold]result metadata, with its generation prompt:[/]")
        _print_json(result["metadata"])
        chain = transform.s("a chain of transforms", echo, "upper") | transform.s(cowsay, "cowsay-default", {"animal": "cow"})
        final = chain.delay().get(timeout=120)
        console.print("[bold]chain[/] echo/upper | cowsay-default:")
        console.print(final["asset"]["content"], markup=False, highlight=False)
        prompt = final["metadata"]["generation_prompt"]
        console.print("[bold]its generation prompt holds the first step's:[/]")
        _print_json({"model_id": prompt["model_id"], "input": prompt["input"]})
    finally:
        stop_process(proc)
        if embedded and not was_running:
            embedded.stop()
    console.print(f"worker log: {log_path}")


from .cli_ops import COMMANDS as _OPS_COMMANDS  # noqa: E402  (batch, flower, status)

for _command in _OPS_COMMANDS:
    main.add_command(_command)

from .cli_services import services as _services  # noqa: E402  (services ls | stop | logs)

main.add_command(_services)


if __name__ == "__main__":
    main()
