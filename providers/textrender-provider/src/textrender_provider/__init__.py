"""Text to an image (PNG, JPEG or WebP) with Pillow's bundled font: deterministic, no system fonts, no service."""

from __future__ import annotations

import io
import time
from typing import Any

from PIL import Image as PILImage
from PIL import ImageColor, ImageDraw, ImageFont

from mediaconduit_worker import Image, MediaCapability, MediaProvider, TextToImageModel, input_text


def _int_option(opts: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    try:
        value = int(opts.get(key, default))
    except (TypeError, ValueError):
        raise ValueError(f"option {key!r} must be an integer, not {opts.get(key)!r}") from None
    if not low <= value <= high:
        raise ValueError(f"option {key!r} must be {low}..{high}, not {value}")
    return value


def _color(opts: dict[str, Any], key: str, default: str) -> str:
    value = str(opts.get(key, default))
    try:
        ImageColor.getrgb(value)
    except ValueError:
        raise ValueError(f"option {key!r}: {value!r} is not a colour") from None
    return value


FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
"""The ``format`` option's values: Pillow's format name and the media type."""


def _format(opts: dict[str, Any]) -> str:
    value = str(opts.get("format", "png")).lower()
    if value not in FORMATS:
        raise ValueError(f"option 'format' must be one of {', '.join(FORMATS)}, not {opts.get('format')!r}")
    return value


def render(text: str, size: int, padding: int, color: str, background: str, fmt: str = "png") -> bytes:
    font = ImageFont.load_default(size=size)
    probe = ImageDraw.Draw(PILImage.new("RGB", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font, spacing=size // 3)
    image = PILImage.new("RGB", (right - left + 2 * padding, bottom - top + 2 * padding), background)
    ImageDraw.Draw(image).multiline_text((padding - left, padding - top), text, fill=color, font=font, spacing=size // 3)
    out = io.BytesIO()
    image.save(out, format=FORMATS[fmt][0])
    return out.getvalue()


class RenderModel(TextToImageModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Image:
        started = time.perf_counter()
        opts = dict(options or {})
        text = input_text(input)
        if not text.strip():
            raise ValueError("nothing to render: the input text is empty")
        # render-png is PNG by its name; render-image declares the format option.
        fmt = _format(opts) if "format" in (self.extra.get("parameters") or {}) else "png"
        data = render(text, _int_option(opts, "fontSize", 48, 8, 400), _int_option(opts, "padding", 24, 0, 1000),
                      _color(opts, "color", "black"), _color(opts, "background", "white"), fmt)
        prompt = self.generation_prompt(input, opts, started)
        return Image(data=data, mime_type=FORMATS[fmt][1], metadata={"generation_prompt": prompt})


class TextRenderProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_IMAGE: RenderModel}
