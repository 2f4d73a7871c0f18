"""Deterministic text steps: the same input and options give the same bytes, so replays compare exactly."""

from __future__ import annotations

import codecs
import re
import time
from collections import Counter
from typing import Any

from mediaconduit_worker import InvalidInputError, MediaCapability, MediaProvider, Text, TextToTextModel, input_text


def wordcount(text: str, top: int) -> str:
    words = re.findall(r"[^\W_]+", text.lower())
    counts = sorted(Counter(words).items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return "\n".join([f"{len(words)} words", *(f"{w} {n}" for w, n in counts)])


class TextOpsModel(TextToTextModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = dict(options or {})
        text = input_text(input)
        if self.id == "rot13":
            content = codecs.encode(text, "rot13")
        else:
            top = opts.get("top", 10)
            if not isinstance(top, int) or top < 0:
                raise InvalidInputError(f"option 'top' must be a non-negative integer, not {top!r}")
            content = wordcount(text, top)
        return Text.from_string(content, metadata={"generation_prompt": self.generation_prompt(input, opts, started)})


class TextOpsProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: TextOpsModel}
