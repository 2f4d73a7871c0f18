"""What a media file's header says (pixels, seconds), read without decoding, and the caps it must meet.

A few kilobytes can declare an hour of audio or a 16000 x 16000 image; decoding them costs gigabytes.
``check_media`` reads only the header (PNG, JPEG, GIF, WebP, BMP and TIFF dimensions; FLAC and WAV
durations) and refuses what passes ``MEDIACONDUIT_MAX_MEDIA_PIXELS`` or ``MEDIACONDUIT_MAX_MEDIA_SECONDS``
before any engine sees it. Formats whose header does not say (MP3, Ogg, MP4, ...) pass here; the
reference services bound them again with ffprobe and their decoders' own limits.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from .errors import MediaLimitError, ProviderHTTPError
from .settings import get_settings

if TYPE_CHECKING:
    from .assets import BinaryAsset

HEAD = 64 * 1024
"""Bytes read from the start of a file: every header parsed here fits, JPEG's walks past APP blocks."""
JPEG_SEARCH = 4 << 20
"""How far into a JPEG its frame header (SOFn) is looked for; EXIF and ICC blocks come first."""
#: The caps as the reference services take them in a query, and the worker settings they come from.
CAP_SETTINGS = {"max_seconds": "MEDIACONDUIT_MAX_MEDIA_SECONDS", "max_pixels": "MEDIACONDUIT_MAX_MEDIA_PIXELS",
                "max_output_bytes": "MEDIACONDUIT_MAX_OUTPUT_BYTES"}
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF87a": "gif", b"GIF89a": "gif",
               b"II*\x00": "tiff", b"MM\x00*": "tiff", b"BM": "bmp"}


@dataclass(frozen=True)
class MediaInfo:
    """What a header declares; ``None`` where it does not say."""

    format: str
    width: int | None = None
    height: int | None = None
    seconds: float | None = None

    @property
    def pixels(self) -> int | None:
        return self.width * self.height if self.width is not None and self.height is not None else None


def image_format(head: bytes) -> str | None:
    """The image format the first bytes name (png, jpeg, gif, tiff, bmp, webp), else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in IMAGE_MAGIC.items() if head.startswith(magic)), None)


def read_info(fh: IO[bytes]) -> MediaInfo | None:
    """The header facts of the media ``fh`` reads (a seekable binary stream at its start), else None."""
    head = fh.read(HEAD)
    fmt = image_format(head)
    if fmt == "png" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return MediaInfo("png", width, height)
    if fmt == "jpeg":
        return _jpeg(fh)
    if fmt == "gif" and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return MediaInfo("gif", width, height)
    if fmt == "bmp" and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return MediaInfo("bmp", abs(width), abs(height))
    if fmt == "webp":
        return _webp(head)
    if fmt == "tiff":
        return _tiff(head)
    if head[:4] == b"fLaC" or head[:3] == b"ID3":
        return _flac(head)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        fh.seek(0, io.SEEK_END)
        return _wav(head, fh.tell())
    return None


def _jpeg(fh: IO[bytes]) -> MediaInfo | None:
    """Walk the JPEG's marker segments to its frame header (SOF0..SOF15 but DHT, JPG and DAC)."""
    fh.seek(2)
    while fh.tell() < JPEG_SEARCH:
        marker = fh.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            fh.seek(-1, io.SEEK_CUR)
            continue
        if kind in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        size_bytes = fh.read(2)
        if len(size_bytes) < 2:
            return None
        (size,) = struct.unpack(">H", size_bytes)
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            frame = fh.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return MediaInfo("jpeg", width, height)
        if kind == 0xDA or size < 2:  # scan data before any frame header: not a JPEG we can read
            return None
        fh.seek(size - 2, io.SEEK_CUR)
    return None


def _webp(head: bytes) -> MediaInfo | None:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return MediaInfo("webp", width, height)
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return MediaInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return MediaInfo("webp", width & 0x3FFF, height & 0x3FFF)
    return None


def _tiff(head: bytes) -> MediaInfo | None:
    """Width and length of the first image (IFD) of a TIFF whose first IFD lies in ``head``."""
    order = "<" if head[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", head[4:8])
    if offset + 2 > len(head):
        return None
    (count,) = struct.unpack(order + "H", head[offset:offset + 2])
    found: dict[int, int] = {}
    for i in range(count):
        entry = head[offset + 2 + 12 * i: offset + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            found[tag] = struct.unpack(order + "H", entry[8:10])[0] if kind == 3 else struct.unpack(order + "I", entry[8:12])[0]
    return MediaInfo("tiff", found.get(256), found.get(257)) if found else None


def _flac(head: bytes) -> MediaInfo | None:
    """Duration from STREAMINFO (total samples / sample rate); None when it declares no total."""
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:  # an ID3v2 tag may precede the stream
        start = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
    if head[start:start + 4] != b"fLaC":
        return None
    info = head[start + 8:start + 8 + 34]  # the first block is always STREAMINFO
    if head[start + 4] & 0x7F != 0 or len(info) < 18:
        return None
    bits = int.from_bytes(info[10:18], "big")
    rate, total = bits >> 44, bits & ((1 << 36) - 1)
    return MediaInfo("flac", seconds=total / rate if rate and total else None)


def _wav(head: bytes, size: int) -> MediaInfo | None:
    """Duration of a RIFF/WAVE file: its data bytes (no more than the file holds) over its frame rate."""
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        chunk, length = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if chunk == b"fmt " and length >= 16:
            fmt = struct.unpack("<HHIIH", head[pos + 8:pos + 22])
        elif chunk == b"data" and fmt is not None:
            codec, _channels, rate, byte_rate, block = fmt
            present = min(length, max(size - pos - 8, 0))
            if codec in (1, 3, 0xFFFE) and block and rate:  # PCM, float, extensible: frames of `block` bytes
                return MediaInfo("wav", seconds=present / block / rate)
            return MediaInfo("wav", seconds=present / byte_rate if byte_rate else None)
        pos += 8 + length + (length & 1)
    return None


def check_info(info: MediaInfo | None, what: str) -> None:
    """Refuse media whose header declares more pixels or seconds than the settings allow."""
    if info is None:
        return
    settings = get_settings()
    if info.pixels is not None and info.pixels > settings.max_media_pixels:
        raise MediaLimitError(f"{what}: the {info.format} image is {info.width} x {info.height} = {info.pixels:,} pixels, "
                              f"over the cap of {settings.max_media_pixels:,} (MEDIACONDUIT_MAX_MEDIA_PIXELS); "
                              "it was not decoded")
    if info.seconds is not None and info.seconds > settings.max_media_seconds:
        raise MediaLimitError(f"{what}: the {info.format} audio declares {info.seconds:,.1f} s, over the cap of "
                              f"{settings.max_media_seconds:,.0f} s (MEDIACONDUIT_MAX_MEDIA_SECONDS); it was not decoded")


def check_media(asset: BinaryAsset, what: str) -> MediaInfo | None:
    """Read ``asset``'s header (never the whole file) and refuse it when it is over a media cap."""
    with asset.open() as fh:
        try:
            info = read_info(fh)
        except (struct.error, OSError, ValueError):  # a damaged header says nothing; the engine judges it
            return None
    check_info(info, what)
    return info


def media_caps() -> dict[str, str]:
    """This worker's caps as query parameters (``max_seconds``, ``max_pixels``, ``max_output_bytes``),
    for a service that bounds its own decoding with them."""
    settings = get_settings()
    return {"max_seconds": f"{settings.max_media_seconds:g}", "max_pixels": str(settings.max_media_pixels),
            "max_output_bytes": str(settings.max_output_bytes)}


def cap_error(exc: ProviderHTTPError, what: str) -> MediaLimitError | None:
    """A service's 413 as a ``MediaLimitError`` naming the worker setting behind the cap it quotes."""
    if exc.status != 413:
        return None
    detail = exc.api_message or str(exc)
    for param, setting in CAP_SETTINGS.items():
        detail = detail.replace(f"({param})", f"({setting})")
    return MediaLimitError(f"{what}: {detail}")
