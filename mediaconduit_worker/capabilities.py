"""The capabilities (one Celery queue each) and tolerant parsing of how manifests spell them."""

from __future__ import annotations

import re
from enum import Enum


class MediaCapability(str, Enum):
    """What a model turns into what; the value is also the queue name."""

    TEXT_TO_TEXT = "text-to-text"
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    IMAGE_TO_TEXT = "image-to-text"
    TEXT_TO_VIDEO = "text-to-video"
    IMAGE_TO_VIDEO = "image-to-video"
    VIDEO_TO_VIDEO = "video-to-video"
    VIDEO_TO_IMAGE = "video-to-image"
    VIDEO_TO_AUDIO = "video-to-audio"
    TEXT_TO_AUDIO = "text-to-audio"
    AUDIO_TO_TEXT = "audio-to-text"
    AUDIO_TO_AUDIO = "audio-to-audio"
    TEXT_TO_3D = "text-to-3d"
    IMAGE_TO_3D = "image-to-3d"

    def __str__(self) -> str:
        return str.__str__(self)  # the value, without Enum's ``value`` property (three calls each time)

    @classmethod
    def _missing_(cls, value: object) -> MediaCapability | None:
        return parse_capability(value) if isinstance(value, str) else None


def parse_capability(value: str) -> MediaCapability | None:
    """Accept ``text-to-text``, ``TEXT_TO_TEXT``, ``TextToText``, ``text_to_3d``; None for other words."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z0-9])", "-", value.strip())
    norm = re.sub(r"[_\s]+", "-", words).lower()
    for cap in MediaCapability:
        if cap.value == norm:
            return cap
    return None


def capability(value: str | MediaCapability) -> MediaCapability:
    """Strict form: a clear error naming the value when it is not a capability."""
    if isinstance(value, MediaCapability):
        return value
    parsed = parse_capability(value)
    if parsed is None:
        known = ", ".join(c.value for c in MediaCapability)
        raise ValueError(f"unknown capability {value!r}; expected one of: {known}")
    return parsed
