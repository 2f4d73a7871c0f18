"""The whisper ASR webservice API, offline: PocketSphinx (English) behind the same endpoints.

``POST /asr?task=transcribe&language=en&output=json|txt|vtt|srt|tsv&encode=true`` with multipart field
``audio_file``; ``POST /detect-language``; ``GET /`` (200, the real service redirects to its docs);
``GET /health``. Audio: WAV (any rate/width/channels), or anything ffmpeg reads when it is installed;
``encode=false`` takes raw 16 kHz mono s16le, as the original does.

``max_seconds`` (query, else ``WHISPER_MAX_MEDIA_SECONDS``, 1800) caps the audio: a WAV header or
ffprobe's duration over it is refused with 413 before decoding, and ffmpeg stops decoding at it (``-t``)
where the header says nothing. The original service ignores the parameter.
"""

from __future__ import annotations

import audioop  # deprecated in 3.11+, still the stdlib resampler on 3.11/3.12
import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import wave
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from pocketsphinx import Decoder

RATE = 16000
MAX_BODY = 200 << 20
MAX_SECONDS = float(os.environ.get("WHISPER_MAX_MEDIA_SECONDS", "1800"))
OUTPUTS = {"txt": "text/plain", "json": "application/json", "vtt": "text/vtt", "srt": "text/plain", "tsv": "text/plain"}
_decoder = Decoder(samprate=RATE, loglevel="ERROR")
_decoder_lock = threading.Lock()


class TooLong(Exception):
    """Audio over the duration cap; the message names it."""


def too_long(seconds: str, cap: float) -> TooLong:
    return TooLong(f"the audio lasts {seconds}, over the cap of {cap:,g} s (max_seconds); it was not decoded past it")


def to_pcm16k(data: bytes, encode: bool, max_seconds: float = MAX_SECONDS) -> bytes:
    """16 kHz mono s16le from a WAV file, from raw PCM (encode=false) or via ffmpeg for other formats;
    ``TooLong`` for audio over ``max_seconds``, found from the header where it says."""
    if not encode:
        if len(data) / 2 / RATE > max_seconds:
            raise too_long(f"{len(data) / 2 / RATE:,.1f} s", max_seconds)
        return data
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        with wave.open(io.BytesIO(data)) as w:  # the frames the file holds, whatever its header claims
            frames, width, channels, rate = w.readframes(w.getnframes()), w.getsampwidth(), w.getnchannels(), w.getframerate()
        seconds = len(frames) / (width * channels) / rate
        if seconds > max_seconds:  # checked before resampling, which is where the memory would go
            raise too_long(f"{seconds:,.1f} s", max_seconds)
        if channels > 1:
            frames = audioop.tomono(frames, width, 0.5, 0.5)
        if width != 2:
            frames = audioop.lin2lin(frames, width, 2)
        if rate != RATE:
            frames, _ = audioop.ratecv(frames, 2, 1, rate, RATE, None)
        return frames
    if shutil.which("ffmpeg"):
        # A file, not a pipe: MP4/M4A keep their index at the end, which ffmpeg must seek to.
        with tempfile.NamedTemporaryFile(prefix="asr-") as src:
            src.write(data)
            src.flush()
            declared = declared_seconds(src.name)
            if declared is not None and declared > max_seconds:
                raise too_long(f"{declared:,.1f} s", max_seconds)
            proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-t", str(max_seconds), "-i", src.name,
                                   "-vn", "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"],
                                  capture_output=True, timeout=300)
        if proc.returncode == 0:
            if declared is None and len(proc.stdout) / 2 / RATE >= max_seconds - 0.05:  # cut by -t
                raise too_long(f"at least {max_seconds:,g} s", max_seconds)
            return proc.stdout
        raise ValueError(f"ffmpeg cannot decode the audio: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    raise ValueError("audio is not WAV and this image has no ffmpeg to convert it")


def declared_seconds(path: str) -> float | None:
    """The duration ffprobe reads from the file's header (None when it does not say)."""
    if not shutil.which("ffprobe"):
        return None
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
                         capture_output=True, text=True, timeout=60).stdout.strip()
    try:
        return float(out)
    except ValueError:
        return None


def transcribe(pcm: bytes) -> dict:
    with _decoder_lock:
        _decoder.start_utt()
        _decoder.process_raw(pcm, full_utt=True)
        _decoder.end_utt()
        hyp = _decoder.hyp()
        frate = _decoder.config["frate"] or 100
        words = [(s.word, s.start_frame / frate, (s.end_frame + 1) / frate) for s in _decoder.seg()]
    text = hyp.hypstr.strip() if hyp else ""
    spoken = [(w, s, e) for w, s, e in words if not w.startswith(("<", "[")) and w != "<sil>"]
    clean = [(w.split("(")[0], s, e) for w, s, e in spoken]
    duration = len(pcm) / 2 / RATE
    segment = {"id": 0, "seek": 0, "start": 0.0, "end": round(duration, 2), "text": " " + text if text else "",
               "tokens": [], "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0,
               "words": [{"word": w, "start": round(s, 2), "end": round(e, 2)} for w, s, e in clean]}
    return {"text": text, "segments": [segment] if text else [], "language": "en"}


def _ts(t: float, sep: str) -> str:
    h, rem = divmod(t, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{int(s):02d}{sep}{int(round((s % 1) * 1000)):03d}"


def render(result: dict, output: str) -> str:
    segs = result["segments"]
    if output == "json":
        return json.dumps(result)
    if output == "vtt":
        return "WEBVTT\n\n" + "".join(f"{_ts(s['start'], '.')} --> {_ts(s['end'], '.')}\n{s['text'].strip()}\n\n" for s in segs)
    if output == "srt":
        return "".join(f"{i + 1}\n{_ts(s['start'], ',')} --> {_ts(s['end'], ',')}\n{s['text'].strip()}\n\n" for i, s in enumerate(segs))
    if output == "tsv":
        return "start\tend\ttext\n" + "".join(f"{int(s['start'] * 1000)}\t{int(s['end'] * 1000)}\t{s['text'].strip()}\n" for s in segs)
    return result["text"] + "\n"


def audio_part(content_type: str, body: bytes) -> tuple[bytes, str] | None:
    """The ``audio_file`` field of a multipart/form-data body: (bytes, filename)."""
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    for part in msg.iter_parts() if msg.is_multipart() else []:
        if part.get_param("name", header="content-disposition") == "audio_file":
            return part.get_payload(decode=True) or b"", part.get_filename() or "audio"
    return None


class Handler(BaseHTTPRequestHandler):
    server_version = "whisper-service-pocketsphinx/1.0"

    def _send(self, status: int, text: str, content_type: str, headers: dict | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type + "; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, detail: str) -> None:
        self._send(status, json.dumps({"detail": detail}), "application/json")

    def do_GET(self) -> None:
        route = urlsplit(self.path).path
        if route in ("/", "/health"):
            self._send(200, json.dumps({"status": "ok", "engine": "pocketsphinx", "api": "whisper-asr-webservice"}),
                       "application/json")
        else:
            self._error(404, f"no route GET {route}")

    def _audio(self) -> tuple[bytes, str] | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._error(413, f"body larger than {MAX_BODY} bytes")
            return None
        found = audio_part(self.headers.get("Content-Type") or "", self.rfile.read(length))
        if found is None:
            self._error(422, "multipart/form-data field 'audio_file' is required")
        return found

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path not in ("/asr", "/detect-language"):
            return self._error(404, f"no route POST {url.path}")
        task, language = query.get("task", "transcribe"), query.get("language") or None
        output, encode = query.get("output", "txt"), query.get("encode", "true").lower() != "false"
        if task not in ("transcribe", "translate"):
            return self._error(422, f"query 'task' must be transcribe or translate, not {task!r}")
        if output not in OUTPUTS:
            return self._error(422, f"query 'output' must be one of {sorted(OUTPUTS)}, not {output!r}")
        if language not in (None, "en", "english"):
            return self._error(422, f"this offline engine only knows English; query 'language' {language!r} is not supported")
        found = self._audio()
        if found is None:
            return
        data, filename = found
        try:
            max_seconds = float(query.get("max_seconds", MAX_SECONDS))
        except ValueError:
            return self._error(422, f"query 'max_seconds' must be a number, not {query['max_seconds']!r}")
        try:
            pcm = to_pcm16k(data, encode, max_seconds)
        except TooLong as exc:
            return self._error(413, str(exc))
        except (ValueError, wave.Error, EOFError) as exc:
            return self._error(422, f"cannot read 'audio_file' {filename!r}: {exc}")
        if url.path == "/detect-language":
            return self._send(200, json.dumps({"detected_language": "english", "language_code": "en"}), "application/json")
        try:
            result = transcribe(pcm)  # English in, English out: transcribe and translate agree
        except Exception as exc:  # a bad utterance must not drop the connection without an answer
            return self._error(500, f"recognition failed: {type(exc).__name__}: {exc}")
        self._send(200, render(result, output), OUTPUTS[output],
                   {"Asr-Engine": "pocketsphinx", "Content-Disposition": f'attachment; filename="{filename}.{output}"'})

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "9000"))
    print(f"whisper-service (pocketsphinx) listening on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
