"""``mediaconduit worker`` and ``mediaconduit broker start|stop``: the processes a deployment runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from ..capabilities import capability
from ..settings import get_settings
from .output import CommandError


@click.command()
@click.option("--capability", "capabilities", multiple=True, required=True, help="Queue(s) to serve, e.g. text-to-text.")
@click.option("--pool", "-P", type=click.Choice(["prefork", "threads", "gevent"]), default=None,
              help="Default: threads for remote-API capabilities (text-to-text), prefork for the rest; "
                   "a mix starts one pool of each.")
@click.option("--concurrency", "-c", type=int, default=None,
              help="Slots per pool (default: 128 for threads/gevent, the CPU count for prefork).")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Processes sharing a threads/gevent pool's slots (default: one per core); "
                   "a prefork pool's processes are its slots.")
@click.option("--loglevel", "-l", default="INFO")
@click.option("--name", "-n", default=None,
              help="Node name (default: <capabilities>@%h; -<pool> and -<n> are added when the command "
                   "runs several pools or processes).")
@click.option("--no-default-queue", is_flag=True, help="Do not also serve the default queue.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics of every pool and process of this command on this port "
                   "(default MEDIACONDUIT_METRICS_PORT; unset: none recorded).")
def worker(capabilities: tuple[str, ...], pool: str | None, concurrency: int | None, processes: int | None,
           loglevel: str, name: str | None, no_default_queue: bool, metrics_port: int | None) -> None:
    """Start a worker pool for the given capabilities."""
    from ..worker.app import DEFAULT_QUEUE
    from ..worker.pools import exec_celery, node_names, plan_pools, require_gevent, run_split

    try:
        queues = [capability(c).value for c in capabilities]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--capability") from None
    plans = plan_pools(queues, None if no_default_queue else DEFAULT_QUEUE, pool, concurrency, processes)
    if any(p.pool == "gevent" for p in plans):
        try:
            require_gevent()
        except RuntimeError as exc:
            raise click.UsageError(str(exc)) from None
    workers = [(one, n) for plan, names in zip(plans, node_names(name, plans))
               for one, n in zip(plan.per_process(), names)]
    port = metrics_port if metrics_port is not None else get_settings().metrics_port
    if port is not None:
        # One directory and one port for the whole command: served here, recorded by every process.
        from ..worker.metrics import prepare

        path = prepare(port)
        os.environ.pop("MEDIACONDUIT_METRICS_PORT", None)  # the workers this command starts serve none of their own
        if len(workers) == 1 and workers[0][0].pool == "gevent":
            os.environ["MEDIACONDUIT_METRICS_PORT"] = str(port)  # exec'd below: it serves the port at its start
        else:
            serve_metrics(port, path)
    if len(workers) > 1:
        children = []
        for one, n in workers:
            argv = ["--pool", one.pool, "--processes", "1", "-l", loglevel, "-n", n]
            argv += [a for q in one.queues if q != DEFAULT_QUEUE for a in ("--capability", q)]
            if DEFAULT_QUEUE not in one.queues:
                argv.append("--no-default-queue")
            if one.concurrency:
                argv += ["-c", str(one.concurrency)]
            children.append(argv)
        raise SystemExit(run_split(children))
    ((one, n),) = workers
    argv = one.argv(loglevel, n)
    if one.pool == "gevent":
        exec_celery(argv)
    from ..worker.app import app

    app.worker_main(["worker", *argv])


def serve_metrics(port: int, path: Path) -> None:
    """The command's metrics endpoint, or one error line when its port cannot be had."""
    from ..worker.metrics.exporter import serve

    address = get_settings().metrics_address
    try:
        serve(port, address, path)
    except OSError as exc:
        raise CommandError(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc} "
                           "(--metrics-port, MEDIACONDUIT_METRICS_PORT, MEDIACONDUIT_METRICS_ADDRESS)") from None


@click.group()
def broker() -> None:
    """The embedded default Redis (MEDIACONDUIT_BROKER_URL unset): start or stop it."""


@broker.command("start")
def broker_start() -> None:
    """Start the embedded Redis unless it runs already (on 127.0.0.1:$MEDIACONDUIT_EMBEDDED_PORT, data under
    $MEDIACONDUIT_HOME/redis) and print its URL; it keeps running after the command ends."""
    from ..worker.broker import EmbeddedRedis

    click.echo(EmbeddedRedis.from_settings().ensure_started())


@broker.command("stop")
def broker_stop() -> None:
    """Stop the embedded Redis (queued jobs and results stay on disk for its next start)."""
    from ..worker.broker import EmbeddedRedis

    click.echo("stopped" if EmbeddedRedis.from_settings().stop() else "not running")


def connect_broker() -> None:
    """The broker a producer command sends to, started (embedded) or reached (configured), else one error line
    naming it, before a job is sent into kombu's publish retries."""
    from kombu.exceptions import OperationalError

    from ..redaction import redact_url
    from ..worker.app import app
    from ..worker.broker import ensure_broker

    url = ensure_broker()
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
    except OperationalError as exc:
        raise CommandError(f"cannot reach the broker {redact_url(url)} (MEDIACONDUIT_BROKER_URL): {exc}") from None


def start_worker_process(capabilities: list[str], concurrency: int = 1, log_path: Path | None = None,
                         pool: str = "prefork") -> subprocess.Popen[bytes]:
    """A worker in its own process (the demo; the tests)."""
    cmd = [sys.executable, "-m", "mediaconduit_worker.cli", "worker", "-P", pool, "-c", str(concurrency), "-l", "INFO"]
    for cap in capabilities:
        cmd += ["--capability", cap]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Warm shutdown (SIGTERM lets Celery finish the current job), SIGKILL if it hangs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
