"""ffmpeg over HTTP: ``POST /<operation>?<options>`` with the media as the raw body, the result as the
raw response body. Bodies are streamed through temporary files, so size is bounded by disk, not memory.

Operations: ``extract-audio`` and ``convert-audio`` (format wav|mp3|ogg|flac, sample_rate, channels),
``thumbnail`` (at seconds, width), ``transcode`` (format mp4|webm, height, video_bitrate), ``probe``
(JSON stream facts). Every result carries ``X-Input-Probe`` and ``X-Output-Probe`` headers (compact JSON).
``timeout`` (seconds) bounds ffmpeg; it is killed when it runs over. Errors are ``{"detail": ...}``
with ffmpeg's own message: 422 for media ffmpeg cannot read, 400 for bad options or a timeout.

Caps (``max_seconds``, ``max_pixels``, ``max_output_bytes`` in the query, else the ``FFMPEG_MAX_*``
environment): ffprobe's header facts are checked before anything is decoded; decoding stops at
``max_seconds`` (``-t``) and refuses frames over ``max_pixels`` (``-max_pixels``) where the header did not
say, and ffmpeg stops writing past ``max_output_bytes`` (``-fs``). Over a cap: 413, naming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

CHUNK = 1 << 20
MAX_TIMEOUT = float(os.environ.get("FFMPEG_MAX_SECONDS", "3600"))
AUDIO = {"wav": ("wav", "pcm_s16le", "audio/wav"), "mp3": ("mp3", "libmp3lame", "audio/mpeg"),
         "ogg": ("ogg", "libvorbis", "audio/ogg"), "flac": ("flac", "flac", "audio/flac")}
VIDEO = {"mp4": (["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                  "-movflags", "+faststart", "-f", "mp4"], "video/mp4"),
         "webm": (["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", "-f", "webm"],
                  "video/webm")}
BITRATE = re.compile(r"^\d+(\.\d+)?[kKmM]?$")
CAPS = {"max_seconds": (float, float(os.environ.get("FFMPEG_MAX_MEDIA_SECONDS", "1800"))),
        "max_pixels": (int, int(os.environ.get("FFMPEG_MAX_MEDIA_PIXELS", "50000000"))),
        "max_output_bytes": (int, int(os.environ.get("FFMPEG_MAX_OUTPUT_BYTES", str(1 << 30))))}


class Refused(Exception):
    """An answer other than 200: status and detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def number(query: dict[str, str], name: str, kind: type, low: float, high: float) -> float | int | None:
    if name not in query:
        return None
    try:
        value = kind(query[name])
    except ValueError:
        raise Refused(400, f"option {name!r} must be a {kind.__name__}, not {query[name]!r}") from None
    if not low <= value <= high:
        raise Refused(400, f"option {name!r} must be between {low} and {high}, not {value}")
    return value


def choice(query: dict[str, str], name: str, allowed: dict, default: str) -> str:
    value = query.get(name, default)
    if value not in allowed:
        raise Refused(400, f"option {name!r} must be one of {sorted(allowed)}, not {value!r}")
    return value


def caps(query: dict[str, str]) -> dict[str, float]:
    """This request's caps: the query's (the worker passes its settings) or this service's defaults."""
    return {name: number(query, name, kind, 1, 2 ** 62) or default for name, (kind, default) in CAPS.items()}


def over(what: str, value: str, cap: str, limit: float, unit: str) -> Refused:
    return Refused(413, f"{what} {value}, over the cap of {limit:,.0f} {unit} ({cap}); the job stopped there")


def check_input(facts: dict, limits: dict[str, float]) -> None:
    """Refuse an input whose header facts (ffprobe, which reads no more than it must) pass a cap."""
    durations = [facts.get("duration") or 0] + [s.get("duration") or 0 for s in facts["streams"]]
    if max(durations) > limits["max_seconds"]:
        raise over("the input lasts", f"{max(durations):,.1f} s", "max_seconds", limits["max_seconds"], "s")
    for s in facts["streams"]:
        pixels = (s.get("width") or 0) * (s.get("height") or 0)
        if pixels > limits["max_pixels"]:
            raise over("the input's frames are", f"{s['width']} x {s['height']} = {pixels:,} pixels", "max_pixels",
                       limits["max_pixels"], "pixels")


def check_output(out: Path, facts: dict, out_facts: dict, limits: dict[str, float]) -> None:
    """What the header could not say: an output at the size cap was cut by ``-fs``, one as long as the
    duration cap by ``-t``; neither is a whole result."""
    if out.stat().st_size >= limits["max_output_bytes"]:
        raise over("the output reached", f"{out.stat().st_size:,} bytes", "max_output_bytes",
                   limits["max_output_bytes"], "bytes")
    if not facts.get("duration") and (out_facts.get("duration") or 0) >= limits["max_seconds"] - 0.05:
        raise over("the input lasts at least", f"{limits['max_seconds']:,g} s", "max_seconds", limits["max_seconds"], "s")


def run(cmd: list[str], deadline: float) -> subprocess.CompletedProcess:
    """``cmd`` killed at ``deadline`` (monotonic): one request's ffprobe and ffmpeg runs share its timeout."""
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=max(deadline - time.monotonic(), 0.1),
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Refused(400, f"{cmd[0]} did not finish within the request's timeout (the job's deadline) and was stopped") from None
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise Refused(422, f"{cmd[0]} cannot process the input: {' | '.join(message[-4:]) or f'exit code {proc.returncode}'}")
    return proc


def probe(path: Path, deadline: float) -> dict:
    """Container and stream facts from ffprobe (a failure here is the clearest 'not media' message)."""
    out = run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)], deadline)
    raw = json.loads(out.stdout or b"{}")
    fmt = raw.get("format") or {}
    if not raw.get("streams"):
        raise Refused(422, f"ffprobe found no audio or video streams in the input ({fmt.get('format_name', 'unknown format')})")
    facts: dict = {"format": fmt.get("format_name"), "duration": float(fmt["duration"]) if fmt.get("duration") else None,
                   "size": int(fmt["size"]) if fmt.get("size") else None,
                   "bit_rate": int(fmt["bit_rate"]) if fmt.get("bit_rate") else None, "streams": []}
    for s in raw["streams"]:
        keep = {k: s[k] for k in ("codec_type", "codec_name", "width", "height", "sample_rate", "channels", "r_frame_rate")
                if k in s}
        if s.get("duration"):
            keep["duration"] = float(s["duration"])
        facts["streams"].append(keep)
    return facts


def operate(op: str, query: dict[str, str], src: Path, work: Path, deadline: float,
            limits: dict[str, float]) -> tuple[Path, str]:
    """Run ``op`` on ``src``; the output file and its media type. Decoding stops at ``max_seconds``,
    refuses frames over ``max_pixels``, and the output file stops growing at ``max_output_bytes``."""
    base = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",  # then input options
            "-t", str(limits["max_seconds"]), "-max_pixels", str(int(min(limits["max_pixels"], 2 ** 31 - 1)))]
    capped = ["-fs", str(int(limits["max_output_bytes"]))]  # an output option
    if op in ("extract-audio", "convert-audio"):
        container, codec, mime = AUDIO[choice(query, "format", AUDIO, "wav")]
        args = ["-i", str(src), "-vn", "-map", "0:a:0"]
        rate = number(query, "sample_rate", int, 1000, 192000)
        channels = number(query, "channels", int, 1, 8)
        args += ["-ar", str(rate)] if rate else []
        args += ["-ac", str(channels)] if channels else []
        out = work / f"out.{container}"
        run(base + args + capped + ["-c:a", codec, "-f", container, str(out)], deadline)
        return out, mime
    if op == "thumbnail":
        at = number(query, "at", float, 0, 10 ** 6) or 0
        width = number(query, "width", int, 16, 8192)
        out = work / "out.png"
        scale = ["-vf", f"scale={width}:-2"] if width else []
        run(base + ["-ss", str(at), "-i", str(src), "-frames:v", "1", *scale, *capped, "-c:v", "png", "-f", "image2", str(out)],
            deadline)
        if not out.exists() or out.stat().st_size == 0:
            raise Refused(422, f"ffmpeg found no video frame at {at}s (is it past the end of the video?)")
        return out, "image/png"
    if op == "transcode":
        fmt = choice(query, "format", VIDEO, "mp4")
        codec_args, mime = VIDEO[fmt]
        height = number(query, "height", int, 16, 4320)
        bitrate = query.get("video_bitrate")
        if bitrate is not None and not BITRATE.match(bitrate):
            raise Refused(400, f"option 'video_bitrate' must look like 800k or 2M, not {bitrate!r}")
        args = ["-i", str(src), *codec_args]
        args += ["-vf", f"scale=-2:{height}"] if height else []
        args += ["-b:v", bitrate] if bitrate else []
        out = work / f"out.{fmt}"
        run(base + args + capped + [str(out)], deadline)
        return out, mime
    if op == "probe":
        out = work / "probe.json"
        out.write_text(json.dumps(probe(src, deadline)))
        return out, "application/json"
    raise Refused(404, f"no operation {op!r}; expected extract-audio, convert-audio, thumbnail, transcode or probe")


class Handler(BaseHTTPRequestHandler):
    server_version = "ffmpeg-service/1.0"
    protocol_version = "HTTP/1.1"

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/health":
            version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
            self._json(200, {"status": "ok", "ffmpeg": version})
        else:
            self._json(404, {"detail": f"no route GET {self.path}"})

    def _receive(self, target: Path) -> int:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise Refused(411, "send the media as the request body with a Content-Length")
        left = int(length)
        with target.open("wb") as fh:
            while left > 0:
                chunk = self.rfile.read(min(CHUNK, left))
                if not chunk:
                    raise Refused(400, f"the body ended {left} bytes short of its Content-Length")
                fh.write(chunk)
                left -= len(chunk)
        return int(length)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        op = url.path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        started = time.monotonic()  # the timeout covers receiving the upload too
        work = Path(tempfile.mkdtemp(prefix="ffmpeg-"))
        try:
            src = work / "input"
            received = self._receive(src)
            if received == 0:
                raise Refused(422, "the request body is empty: send the media file")
            deadline = started + min(number(query, "timeout", float, 0.1, MAX_TIMEOUT) or MAX_TIMEOUT, MAX_TIMEOUT)
            limits = caps(query)
            facts = probe(src, deadline)
            if op != "probe":
                check_input(facts, limits)
            out, mime = operate(op, query, src, work, deadline, limits)
            out_facts = probe(out, deadline) if op != "probe" else facts
            if op != "probe":
                check_output(out, facts, out_facts, limits)
            self.send_response(200)
            self.send_header("Content-Type", mime)
            self.send_header("Content-Length", str(out.stat().st_size))
            self.send_header("X-Input-Probe", json.dumps(facts, separators=(",", ":")))
            self.send_header("X-Output-Probe", json.dumps(out_facts, separators=(",", ":")))
            self.end_headers()
            with out.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile, CHUNK)
        except Refused as exc:
            self.close_connection = True  # the body may be partly unread: never parse it as a next request
            self._json(exc.status, {"detail": str(exc)})
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8890"))), Handler).serve_forever()
