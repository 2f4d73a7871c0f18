"""Cowsay over HTTP: ``POST /cowsay {"text": ..., "animal": "cow"}`` -> ``{"cowsayOutput": ...}``; ``GET /health``."""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cowsay

MAX_BODY = 1 << 20


class Handler(BaseHTTPRequestHandler):
    server_version = "cowsay-service/1.0"

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/health":
            self._json(200, {"status": "ok", "service": "cowsay"})
        else:
            self._json(404, {"error": f"no route GET {self.path}"})

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/cowsay":
            return self._json(404, {"error": f"no route POST {self.path}"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._json(413, {"error": f"body larger than {MAX_BODY} bytes"})
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            return self._json(400, {"error": f"body is not JSON: {exc}"})
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text:
            return self._json(400, {"error": "field 'text' must be a non-empty string"})
        animal = data.get("animal") or "cow"
        if animal not in cowsay.char_names:
            return self._json(400, {"error": f"unknown animal {animal!r}; choose one of {sorted(cowsay.char_names)}"})
        self._json(200, {"cowsayOutput": cowsay.get_output_string(animal, text)})

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "80"))
    print(f"cowsay-service listening on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
