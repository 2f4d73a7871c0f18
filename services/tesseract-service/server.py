"""Tesseract OCR over HTTP.

``POST /ocr?lang=eng&psm=3`` with the image as the body (PNG, JPEG, TIFF, ...) -> ``{"text": ..., "language": ...}``;
``GET /languages``; ``GET /health``.

Only image bytes are read: a body that is not a PNG, JPEG, GIF, TIFF, BMP, WebP or PNM is refused
(Tesseract takes any other input as a list of file names and would read those files). ``max_pixels``
(query, else ``TESSERACT_MAX_MEDIA_PIXELS``, 50,000,000) caps what a PNG, JPEG, GIF or BMP header
declares, before Tesseract decodes it: 413.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 50 << 20
LANG = re.compile(r"^[A-Za-z_]{2,20}(\+[A-Za-z_]{2,20})*$")
MAX_PIXELS = int(os.environ.get("TESSERACT_MAX_MEDIA_PIXELS", "50000000"))
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF87a": "gif", b"GIF89a": "gif",
               b"II*\x00": "tiff", b"MM\x00*": "tiff", b"BM": "bmp", b"P1": "pnm", b"P2": "pnm", b"P3": "pnm",
               b"P4": "pnm", b"P5": "pnm", b"P6": "pnm"}


def image_format(data: bytes) -> str | None:
    """The image format the first bytes name, else None (then Tesseract would read it as a file list)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in IMAGE_MAGIC.items() if data.startswith(magic)), None)


def dimensions(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, BMP or JPEG header, without decoding; None for others."""
    if fmt == "png" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if fmt == "gif" and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if fmt == "bmp" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    pos = 2
    while fmt == "jpeg" and pos + 9 <= len(data) and data[pos] == 0xFF:
        kind, (size,) = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        pos += 2 + size
    return None


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
        image = self.rfile.read(length)
        fmt = image_format(image)
        if fmt is None:
            return self._json(415, {"error": "the body is not an image (PNG, JPEG, GIF, TIFF, BMP, WebP or PNM); "
                                             "send the image's bytes"})
        try:
            max_pixels = int(query.get("max_pixels", MAX_PIXELS))
        except ValueError:
            return self._json(400, {"error": f"query 'max_pixels' {query['max_pixels']!r} must be an integer"})
        size = dimensions(image, fmt)
        if size is not None and size[0] * size[1] > max_pixels:
            return self._json(413, {"error": f"the {fmt} image is {size[0]} x {size[1]} = {size[0] * size[1]:,} pixels, "
                                             f"over the cap of {max_pixels:,} (max_pixels); it was not decoded"})
        try:
            text = ocr(image, lang, int(psm))
        except ValueError as exc:
            return self._json(400, {"error": f"tesseract could not read the image: {exc}"})
        self._json(200, {"text": text, "language": lang})

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8884"))
    print(f"tesseract-service listening on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
