"""Local files as batch items, and outputs back as files: the producer side of a folder-in, folder-out batch.

A file becomes an asset by what its bytes are (the magic numbers at its start; ffprobe for containers
that hold audio or video alike), not by its name. It is streamed into the content-addressed blob store
only when the store lacks its digest, so a re-run hashes its files again but writes nothing. Its item's
input is the asset alone (no file name), so its job id follows from content and steps only.

This is trusted code run by the operator: the files it reads are the operator's. Job JSON never names
a path (``assets.binary_source``); a JSONL line may, only with ``--allow-files`` (``jsonl.py``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..assets import ASSET_TYPES
from ..blobs import CHUNK, BlobStore, blob_digest
from ..errors import InvalidInputError
from ..mediainfo import image_format

#: Output file suffixes by media type; anything else gets the suffix of its type's main subtype.
SUFFIX_BY_MIME = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/mpeg": ".mp3", "audio/ogg": ".ogg",
                  "audio/flac": ".flac", "audio/mp4": ".m4a", "audio/webm": ".weba", "video/mp4": ".mp4",
                  "video/webm": ".webm", "video/x-matroska": ".mkv", "video/quicktime": ".mov",
                  "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
                  "image/tiff": ".tiff", "image/bmp": ".bmp", "text/plain": ".txt"}
_AMBIGUOUS = {"video/mp4": "audio/mp4", "video/webm": "audio/webm", "video/x-matroska": "audio/x-matroska",
              "audio/ogg": "video/ogg"}
"""Containers whose bytes alone do not say audio or video: ffprobe's streams decide (first: the guess)."""


@dataclass(frozen=True)
class Sniffed:
    """What a file holds: its asset type (audio, image, video) and media type."""

    type: str
    mime_type: str


def sniff(path: Path) -> Sniffed:
    """The asset type of a file from its content; ``InvalidInputError`` naming the file when it is not
    audio, an image or a video."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    mime = _magic(head)
    if mime is None or mime in _AMBIGUOUS:
        probed = _ffprobe(path)
        if mime is None and probed:
            return Sniffed(probed, _probed_mime(path, probed))
        if mime is not None and probed and not mime.startswith(probed + "/"):
            mime = _AMBIGUOUS[mime]
    if mime is None:
        raise InvalidInputError(f"{path}: not audio, an image or a video (neither its first bytes nor ffprobe "
                                "name a media format)")
    return Sniffed(mime.split("/")[0], mime)


def _magic(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm" if b"webm" in head else "video/x-matroska"
    fmt = image_format(head)
    return f"image/{fmt}" if fmt else None


def _ffprobe(path: Path) -> str | None:
    """``video`` or ``audio`` by the streams ffprobe finds, ``""`` when it reads none, None without ffprobe."""
    if shutil.which("ffprobe") is None:
        return None
    try:
        proc = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type:stream_disposition="
                               "attached_pic", "-of", "json", str(path)], capture_output=True, text=True, timeout=60)
        streams = json.loads(proc.stdout or "{}").get("streams") or []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return ""
    kinds = {s.get("codec_type") for s in streams if not (s.get("disposition") or {}).get("attached_pic")}
    return "video" if "video" in kinds else "audio" if "audio" in kinds else ""


def _probed_mime(path: Path, kind: str) -> str:
    from ..assets import guess_mime

    guessed = guess_mime(path.name, f"{kind}/octet-stream")
    return guessed if guessed.startswith(kind + "/") else f"{kind}/octet-stream"


def file_digest(path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    """SHA-256 and size of a file, read in chunks (``on_bytes`` told of each)."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return h.hexdigest(), size


def put_file(store: BlobStore, path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, str, int, int]:
    """A file into the store unless it holds its digest already: (uri, sha256, size, bytes written).

    Hashing first costs a second read of a new file, and saves writing a file the store has (a re-run).
    ``on_bytes`` is told of the bytes hashed: each file's size once, whether it is written or not.
    """
    digest, size = file_digest(path, on_bytes)
    if store.claim(digest):
        return f"blob://sha256/{digest}", digest, size, 0
    with open(path, "rb") as fh, store.writer(what=str(path)) as w:
        while chunk := fh.read(CHUNK):
            w.write(chunk)
    if w.sha256 != digest:  # the file changed between the two reads: the stored bytes are what was read
        digest, size = w.sha256, w.size
    return w.uri, digest, size, w.size


def file_asset(store: BlobStore, path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[dict[str, Any], int]:
    """The asset JSON of a file (its type by content), stored; and the bytes written for it."""
    kind = sniff(path)
    uri, digest, size, written = put_file(store, path, on_bytes)
    return {"type": kind.type, "uri": uri, "sha256": digest, "size": size, "mime_type": kind.mime_type,
            "metadata": {}}, written


def collect_files(spec: str) -> tuple[list[Path], Path]:
    """The regular files a folder holds (recursively, hidden ones left out) or a glob matches (``**``
    too), sorted; and the folder output names are taken relative to."""
    root = Path(spec)
    if root.is_dir():
        found = [p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                          for part in p.relative_to(root).parts)]
        if not found:
            raise InvalidInputError(f"--files {spec!r}: the folder holds no file")
        return sorted(found), root
    found = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
    if not found:
        raise InvalidInputError(f"--files {spec!r}: no file matches (a folder, a file or a glob such as 'talks/*.wav')")
    return sorted(found), Path(_glob_base(spec))


def line_file(folder: Path, name: str) -> Path:
    """The file a JSONL line names (``--allow-files``), resolved against the JSONL file's ``folder``;
    ``InvalidInputError`` when the name is absolute or resolves outside the folder (``..``, a symlink
    pointing out), so a JSONL file handed over by someone else reads nothing but what lies beside it."""
    if Path(name).is_absolute():
        raise InvalidInputError(f"file {name!r} is an absolute path: name files relative to the JSONL file's "
                                f"folder {folder}")
    root = folder.resolve()
    resolved = (root / name).resolve()
    if not resolved.is_relative_to(root):
        raise InvalidInputError(f"file {name!r} resolves to {resolved}, outside the JSONL file's folder {root}: refused")
    return resolved


def _glob_base(spec: str) -> str:
    """The folder of a glob before its first wildcard."""
    parts = Path(spec).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    if len(fixed) == len(parts):  # a single file named as it is
        fixed = fixed[:-1]
    return os.path.join(*fixed) if fixed else "."


@dataclass(frozen=True)
class StoredFile:
    """One input file after intake: its asset JSON (stored), or why it cannot be an item."""

    path: Path
    asset: dict[str, Any] | None
    error: str | None
    written: int
    """Bytes written to the store for it (0: the store held it already)."""


def store_files(paths: Iterable[Path], store: BlobStore | None = None,
                on_bytes: Callable[[int], None] | None = None) -> Iterable[StoredFile]:
    """Each file typed by its bytes and stored, one by one; a file that is not media, or cannot be read,
    is reported, not raised, so it fails alone. ``on_bytes`` is told of every chunk read."""
    store = store or BlobStore()
    for path in paths:
        try:
            asset, written = file_asset(store, path, on_bytes)
        except InvalidInputError as exc:
            yield StoredFile(path, None, str(exc), 0)
        except OSError as exc:
            yield StoredFile(path, None, f"{path}: {exc.strerror or exc}", 0)
        else:
            yield StoredFile(path, asset, None, written)


class OutputNames:
    """Output file names after their inputs: ``talk1.wav`` gives ``talk1.txt``; inputs that would share a
    name whatever their outputs (``a.wav`` and ``a.mp3``) keep their whole names (``a.wav.txt``)."""

    def __init__(self, relatives: Iterable[Path]) -> None:
        seen: dict[Path, int] = {}
        for rel in relatives:
            seen[rel.with_suffix("")] = seen.get(rel.with_suffix(""), 0) + 1
        self._shared = {stem for stem, n in seen.items() if n > 1}

    def name(self, rel: Path, suffix: str) -> Path:
        return rel.with_name(rel.name + suffix) if rel.with_suffix("") in self._shared else rel.with_suffix(suffix)


def save_output(record: dict[str, Any], target: Path, sidecar: bool, store: BlobStore | None = None) -> int:
    """A result's output at ``target`` (its suffix added) and, with ``sidecar``, the record beside it as
    ``<output>.json``; the bytes of the output."""
    written = write_output(record, target, store)
    if sidecar:
        side = target.with_name(target.name + ".json")
        tmp = side.with_name(f".{side.name}.part")
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, side)
    return written


def output_suffix(record: dict[str, Any]) -> str:
    """The file suffix a result's asset is written with."""
    asset = record.get("asset") if isinstance(record, dict) else None
    if not isinstance(asset, dict):
        return ".json"
    if asset.get("type") == "text":
        return ".txt"
    mime = str(asset.get("mime_type") or "")
    return SUFFIX_BY_MIME.get(mime) or ("." + mime.split("/")[-1] if "/" in mime else ".bin")


def write_output(record: dict[str, Any], target: Path, store: BlobStore | None = None) -> int:
    """A result's output asset as a file (text as text, media as their bytes); the bytes written.

    A blob missing here is an error naming it and the store looked in (``BlobStore.missing``).
    """
    asset = record.get("asset") if isinstance(record, dict) else None
    if not isinstance(asset, dict) or asset.get("type") not in ASSET_TYPES:
        raise InvalidInputError("the result holds no output asset")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    try:
        if asset["type"] == "text":
            data = str(asset.get("content", "")).encode("utf-8")
            tmp.write_bytes(data)
            written = len(data)
        else:
            written = copy_blob(str(asset.get("uri", "")), tmp, store)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def copy_blob(uri: str, target: Path | None, store: BlobStore | None = None) -> int:
    """A blob's bytes into ``target`` (stdout's binary stream for None), streamed and checked against
    its digest; the bytes copied."""
    import sys

    digest = blob_digest(uri)
    if digest is None:
        raise InvalidInputError(f"{uri[:120]!r} is not a blob reference (blob://sha256/<64 hex digits>)")
    store = store or BlobStore()
    source = store.path_for(digest)
    if not source.is_file():
        raise store.missing(uri)
    h, size = hashlib.sha256(), 0
    with open(source, "rb") as src:
        out = open(target, "wb") if target is not None else None
        try:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                (out.write if out is not None else sys.stdout.buffer.write)(chunk)
        finally:
            if out is not None:
                out.close()
    if h.hexdigest() != digest:
        raise InvalidInputError(f"blob {uri} in {store.root} does not match its digest: the stored copy is damaged")
    return size
