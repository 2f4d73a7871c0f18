"""Model base classes: what a provider hands the worker for one model id."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar

from .assets import Asset, Text, input_items
from .capabilities import MediaCapability
from .record import create_generation_prompt


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a streaming model is (a media model's chunk): ``done`` of ``total`` (None: not known)."""

    done: float
    total: float | None = None
    message: str | None = None


Chunk = str | Progress
"""What ``Model.stream`` yields: a text delta, or a ``Progress``."""
OutputStream = Generator[Chunk, None, Asset]
"""``Model.stream``'s generator: it yields chunks and returns the output asset."""


class Model:
    """One transformable model. Subclasses implement ``transform``; a model that can stream also overrides
    ``stream``."""

    capability: ClassVar[MediaCapability | None] = None

    def __init__(self, id: str, name: str | None = None, description: str | None = None, **extra: Any) -> None:
        self.id = id
        self.name = name or id
        self.description = description
        # The MediaProvider that built this model; typed loosely so this module never imports provider.py.
        self.provider: Any = extra.pop("provider", None)
        self.extra = extra

    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Asset:
        raise NotImplementedError(f"model {self.id!r} does not implement transform()")

    def stream(self, input: Any, options: dict[str, Any] | None = None) -> OutputStream:
        """Yield chunks as the output is made (text deltas; ``Progress`` for media), then return the output
        ``transform`` would (the same asset, metadata and generation prompt). Not overridden: no chunk, then
        ``transform``'s output."""
        output = self.transform(input, options)
        yield from ()
        return output

    @property
    def can_stream(self) -> bool:
        """Whether this model's class overrides ``stream`` (only then is a job's output streamed)."""
        return type(self).stream is not Model.stream

    def generation_prompt(self, input: Any, options: dict[str, Any] | None, started: float, **extra: Any) -> dict[str, Any]:
        """``create_generation_prompt`` filled in from this model; ``started`` is a ``time.perf_counter()``."""
        return create_generation_prompt(
            input=input,
            options=options,
            model_id=self.id,
            model_name=self.name,
            provider=self.provider.id if self.provider else "unknown",
            transformation_type=str(self.capability) if self.capability else type(self).__name__,
            processing_time=round((time.perf_counter() - started) * 1000, 3),
            **extra,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r}>"


def run_stream(stream: OutputStream, each: Callable[[Chunk], None]) -> Asset:
    """Drive ``stream`` to its end, handing ``each`` every chunk; the output asset it returned."""
    while True:
        try:
            chunk = next(stream)
        except StopIteration as stop:
            return stop.value
        each(chunk)


def input_text(input: Any) -> str:
    """The text of a ``str``, a ``Text`` asset or a list of them (joined by newlines)."""
    texts = []
    for item in input_items(input):
        if not isinstance(item, (str, Text)):
            raise TypeError(f"expected text input, got {type(item).__name__}")
        texts.append(item if isinstance(item, str) else item.content)
    return "\n".join(texts)


def input_asset(input: Any, kind: type[Asset]) -> Any:
    """The single asset of type ``kind`` in ``input`` (a list of one is unwrapped)."""
    if isinstance(input, list) and len(input) == 1:
        input = input[0]
    if not isinstance(input, kind):
        raise TypeError(f"expected a {kind.__name__.lower()} asset, got {type(input).__name__}")
    return input


class TextToTextModel(Model):
    """Text in, ``Text`` out."""

    capability = MediaCapability.TEXT_TO_TEXT


class TextToAudioModel(Model):
    """Text in, ``Audio`` out."""

    capability = MediaCapability.TEXT_TO_AUDIO


class TextToImageModel(Model):
    """Text in, ``Image`` out."""

    capability = MediaCapability.TEXT_TO_IMAGE


class TextToVideoModel(Model):
    """Text in, ``Video`` out."""

    capability = MediaCapability.TEXT_TO_VIDEO


class AudioToTextModel(Model):
    """``Audio`` in, ``Text`` out."""

    capability = MediaCapability.AUDIO_TO_TEXT


class ImageToTextModel(Model):
    """``Image`` in, ``Text`` out."""

    capability = MediaCapability.IMAGE_TO_TEXT


class ImageToImageModel(Model):
    """``Image`` in, ``Image`` out."""

    capability = MediaCapability.IMAGE_TO_IMAGE


class AudioToAudioModel(Model):
    """``Audio`` in, ``Audio`` out."""

    capability = MediaCapability.AUDIO_TO_AUDIO


class VideoToAudioModel(Model):
    """``Video`` in, ``Audio`` out."""

    capability = MediaCapability.VIDEO_TO_AUDIO


class VideoToImageModel(Model):
    """``Video`` in, ``Image`` out (a frame)."""

    capability = MediaCapability.VIDEO_TO_IMAGE


class VideoToVideoModel(Model):
    """``Video`` in, ``Video`` out."""

    capability = MediaCapability.VIDEO_TO_VIDEO
