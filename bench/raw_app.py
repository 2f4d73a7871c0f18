"""Yardstick: a raw Celery task with exactly the MediaConduit app's settings, returning a small dict."""

from __future__ import annotations

import threading
import time

import httpx

from mediaconduit_worker.worker.app import make_app

app = make_app()
app.main = "raw"


@app.task(name="bench.raw")
def raw(x: str) -> dict[str, str]:
    return {"echo": x}


@app.task(name="bench.sleep")
def sleep(seconds: float) -> float:
    """A job that takes a while: the transport benchmark kills its worker while it runs."""
    time.sleep(seconds)
    return seconds


_http = threading.local()


@app.task(name="bench.raw_http")
def raw_http(url: str, body: dict, headers: dict[str, str]) -> dict:
    """Yardstick of the remote benchmark: one POST to the API (a client per pool thread), its JSON back."""
    client = getattr(_http, "client", None)
    if client is None:
        client = _http.client = httpx.Client(timeout=60)
    return client.post(url, json=body, headers=headers).json()  # type: ignore[no-any-return]
