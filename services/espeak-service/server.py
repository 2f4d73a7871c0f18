"""eSpeak NG over HTTP.

``POST /synthesize`` JSON ``{"text": ..., "voice": "en-us", "speed": 160, "pitch": 50}`` -> ``audio/wav``;
``GET /voices`` lists voices; ``GET /health``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_TEXT = 20_000
VOICE = re.compile(r"^[A-Za-z0-9_+\-/]{1,40}$")


def synthesize(text: str, voice: str, speed: int, pitch: int) -> bytes:
    proc = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", "--stdin"],
        input=text.encode(), capture_output=True, timeout=120,
    )
    if proc.returncode != 0 or not proc.stdout.startswith(b"RIFF"):
        raise ValueError(proc.stderr.decode(errors="replace").strip() or f"espeak-ng exited with {proc.returncode}")
    return with_sizes(proc.stdout)


def with_sizes(wav: bytes) -> bytes:
    """The WAV with its RIFF and data chunk sizes set to the bytes it has: on stdout espeak-ng cannot seek back,
    so it writes placeholder sizes (0x7ffff...), which strict readers refuse (C2PA's signer among them)."""
    out = bytearray(wav)
    struct.pack_into("<I", out, 4, len(out) - 8)
    pos = 12
    while pos + 8 <= len(out):
        chunk, size = out[pos:pos + 4], struct.unpack_from("<I", out, pos + 4)[0]
        if chunk == b"data":
            struct.pack_into("<I", out, pos + 4, len(out) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    return bytes(out)


def voices() -> list[dict[str, str]]:
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, timeout=30).stdout.splitlines()[1:]
    rows = [line.split() for line in out if line.strip()]
    return [{"language": r[1], "name": r[3], "file": r[4]} for r in rows if len(r) >= 5]


class Handler(BaseHTTPRequestHandler):
    server_version = "espeak-service/1.0"

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        route = self.path.split("?")[0]
        if route == "/health":
            self._json(200, {"status": "ok", "service": "espeak"})
        elif route == "/voices":
            self._json(200, voices())
        else:
            self._json(404, {"error": f"no route GET {self.path}"})

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/synthesize":
            return self._json(404, {"error": f"no route POST {self.path}"})
        try:
            data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError as exc:
            return self._json(400, {"error": f"body is not JSON: {exc}"})
        text, voice = data.get("text"), str(data.get("voice") or "en-us")
        if not isinstance(text, str) or not text.strip():
            return self._json(400, {"error": "field 'text' must be a non-empty string"})
        if len(text) > MAX_TEXT:
            return self._json(413, {"error": f"field 'text' is longer than {MAX_TEXT} characters"})
        if not VOICE.match(voice):
            return self._json(400, {"error": f"field 'voice' {voice!r} is not a voice name"})
        try:
            speed, pitch = int(data.get("speed") or 160), int(data.get("pitch") if data.get("pitch") is not None else 50)
        except (TypeError, ValueError):
            return self._json(400, {"error": "fields 'speed' and 'pitch' must be integers"})
        if not 80 <= speed <= 450 or not 0 <= pitch <= 99:
            return self._json(400, {"error": "field 'speed' must be 80..450 and 'pitch' 0..99"})
        try:
            wav = synthesize(text, voice, speed, pitch)
        except ValueError as exc:
            return self._json(400, {"error": f"espeak-ng failed for voice {voice!r}: {exc}"})
        self._send(200, wav, "audio/wav")

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5002"))
    print(f"espeak-service listening on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
