"""Yardstick: a raw Celery task with exactly the MediaConduit app's settings, returning a small dict."""

from __future__ import annotations

from mediaconduit_worker.worker.app import make_app

app = make_app()
app.main = "raw"


@app.task(name="bench.raw")
def raw(x: str) -> dict[str, str]:
    return {"echo": x}
