"""Tesseract OCR over HTTP.

``POST /ocr?lang=eng&psm=3`` with the image as the body (PNG, JPEG, TIFF, ...) -> ``{"text": ..., "language": ...}``;
``GET /languages``; ``GET /health``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 50 << 20
LANG = re.compile(r"^[A-Za-z_]{2,20}(\+[A-Za-z_]{2,20})*$")


def languages() -> list[str]:
    out = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, timeout=30).stdout
    return [line.strip() for line in out.splitlines()[1:] if line.strip()]


def ocr(image: bytes, lang: str, psm: int) -> str:
    proc = subprocess.run(["tesseract", "stdin", "stdout", "-l", lang, "--psm", str(psm)],
                          input=image, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise ValueError(proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["tesseract failed"])
    return proc.stdout.decode(errors="replace").strip()


class Handler(BaseHTTPRequestHandler):
    server_version = "tesseract-service/1.0"

    def _json(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        route = self.path.split("?")[0]
        if route == "/health":
            self._json(200, {"status": "ok", "service": "tesseract"})
        elif route == "/languages":
            self._json(200, languages())
        else:
            self._json(404, {"error": f"no route GET {self.path}"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/ocr":
            return self._json(404, {"error": f"no route POST {url.path}"})
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        lang, psm = query.get("lang", "eng"), query.get("psm", "3")
        if not LANG.match(lang):
            return self._json(400, {"error": f"query 'lang' {lang!r} is not a tesseract language code"})
        if not psm.isdigit() or not 0 <= int(psm) <= 13:
            return self._json(400, {"error": f"query 'psm' {psm!r} must be 0..13"})
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            return self._json(400 if length == 0 else 413, {"error": "send the image as the request body (max 50 MB)"})
        try:
            text = ocr(self.rfile.read(length), lang, int(psm))
        except ValueError as exc:
            return self._json(400, {"error": f"tesseract could not read the image: {exc}"})
        self._json(200, {"text": text, "language": lang})

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8884"))
    print(f"tesseract-service listening on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
