"""Media of any size: file-backed assets, streamed blob writes, and the streamed HTTP path proven under
an address-space cap smaller than the file it moves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CAP_MB = 192
FILE_MB = 320  # larger than the cap: holding it whole in memory cannot work


def sha_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_from_path_open_and_path_never_need_the_bytes(tmp_path):
    from mediaconduit_worker import Audio, Video
    from mediaconduit_worker.assets import asset_from_json

    src = tmp_path / "clip.webm"
    src.write_bytes(os.urandom(3 << 20) + b"tail")
    video = Video.from_path(src)
    assert video.mime_type == "video/webm" and video.size == src.stat().st_size and video.sha256 == sha_of(src)
    assert video.uri == f"blob://sha256/{video.sha256}" and video._data is None
    assert video.path().read_bytes() == src.read_bytes() and video.path() != src
    with video.open() as fh:
        assert fh.read(4) == src.read_bytes()[:4]
    again = asset_from_json(video.to_json())  # the JSON form carries the reference, never a path
    assert again.path() == video.path() and "clip.webm" not in json.dumps(video.to_json())
    with pytest.raises(Exception, match="missing.wav is not a readable file"):
        Audio.from_path(tmp_path / "missing.wav")
    inline = Audio.from_bytes(b"RIFF....WAVE")
    assert inline.path().read_bytes() == b"RIFF....WAVE"  # stored on demand


def test_blob_writer_hashes_while_writing_and_discards_on_error(tmp_path):
    from mediaconduit_worker.blobs import BlobStore

    store = BlobStore(tmp_path)
    uri, digest, size = store.put_stream(iter([b"abc", b"def"]))
    assert digest == hashlib.sha256(b"abcdef").hexdigest() and size == 6 and store.get(uri) == b"abcdef"
    with pytest.raises(RuntimeError), store.writer() as w:
        w.write(b"half")
        raise RuntimeError("the download broke")
    leftovers = [p for p in (tmp_path / "sha256").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


class _Echo(BaseHTTPRequestHandler):
    """Reads the body in chunks to a file and streams it back: a service that never holds media whole."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        left = int(self.headers["Content-Length"])
        with tempfile.TemporaryFile() as fh:
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                fh.write(chunk)
                left -= len(chunk)
            size = fh.tell()
            fh.seek(0)
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            shutil.copyfileobj(fh, self.wfile, 1 << 20)


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


CHILD = """
import json, resource, sys
from pathlib import Path
from mediaconduit_worker import HttpClient, Video
from mediaconduit_worker.media import FileBody, save_response

cap = int(sys.argv[3]) << 20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
try:
    Path(sys.argv[1]).read_bytes()
    control = "read whole"
except MemoryError:
    control = "MemoryError"
video = Video.from_path(sys.argv[1])
body = FileBody(video.path())
client = HttpClient("echo", sys.argv[2], timeout=120)
response = client.open_stream("POST", "/upload", content=body, headers=body.headers(video.mime_type))
back = save_response(response, Video, what="echo")
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
print(json.dumps({"control": control, "in": video.sha256, "out": back.sha256, "size": back.size, "peak_rss_mb": peak}))
"""


def test_streaming_path_moves_a_file_larger_than_the_memory_cap(tmp_path, echo):
    big = tmp_path / "big.mp4"
    with big.open("wb") as fh:
        block = os.urandom(1 << 20)
        for i in range(FILE_MB):
            fh.write(block[:-8] + i.to_bytes(8, "big"))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(big), echo, str(CAP_MB)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MEDIACONDUIT_BLOB_DIR": str(tmp_path / "blobs")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["control"] == "MemoryError", "the cap must be real: reading the file whole has to fail"
    assert report["in"] == report["out"] == sha_of(big) and report["size"] == FILE_MB << 20
    assert report["peak_rss_mb"] < CAP_MB
