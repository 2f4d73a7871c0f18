"""``mediaconduit demo`` (``make run``): the main job on the embedded default broker."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from ..settings import get_settings
from .output import print_json
from .worker import start_worker_process, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]


@click.command()
def demo() -> None:
    """The main job on the embedded default: broker, worker, a transform and a chain, printed."""
    from rich.console import Console

    from ..worker.app import app, transform
    from ..worker.broker import EmbeddedRedis, ensure_broker
    from ..worker.status import wait_for_workers

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
            wait_for_workers(app, alive=lambda: proc.poll() is None)
        cowsay = str(REPO_ROOT / "providers" / "cowsay-local-provider")
        echo = str(REPO_ROOT / "providers" / "echo-provider")
        with console.status("cowsay-local-provider: first use installs its dependencies"):
            result = transform.delay("Hello from MediaConduit", cowsay, "cowsay-default", {"animal": "tux"}).get(timeout=300)
        console.print("[bold]transform[/] cowsay-default (tux):")
        console.print(result["asset"]["content"], markup=False, highlight=False)
        console.print("[bold]result metadata, with its generation prompt:[/]")
        print_json(result["metadata"])
        console.print("(both times are milliseconds: generation_prompt.processing_time is the model's own, "
                      "processing_time_ms the whole task's, here with the provider's first load and install)",
                      highlight=False)
        chain = transform.s("a chain of transforms", echo, "upper") | transform.s(cowsay, "cowsay-default", {"animal": "cow"})
        final = chain.delay().get(timeout=120)
        console.print("[bold]chain[/] echo/upper | cowsay-default:")
        console.print(final["asset"]["content"], markup=False, highlight=False)
        prompt = final["metadata"]["generation_prompt"]
        console.print("[bold]its generation prompt holds the first step's:[/]")
        print_json({"model_id": prompt["model_id"], "input": prompt["input"]})
    finally:
        stop_process(proc)
        if embedded and not was_running:
            embedded.stop()
    console.print(f"worker log: {log_path}")
    console.print("The broker and worker stopped with the demo. For jobs of your own (the README's first steps): "
                  "`mediaconduit broker start`, then `mediaconduit worker --capability text-to-text &`; from any "
                  "language, through the HTTP API:", highlight=False)
    providers = REPO_ROOT / "providers"
    body = json.dumps({"input": "Hello", "provider": str(providers / "echo-provider"), "model": "upper"})
    for line in (f"MEDIACONDUIT_PROVIDER_ALLOW={shlex.quote(str(providers))} mediaconduit gateway &",
                 "KEY=$(mediaconduit keys create --tenant demo)",
                 "curl -s http://127.0.0.1:8700/v1/jobs -H \"Authorization: Bearer $KEY\" -H 'Prefer: wait=30' "
                 f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"):
        click.echo(f"  {line}")  # unwrapped, to be copied whole
