"""Echo provider: text-to-text with no dependencies (tests, benchmarks, examples)."""

from __future__ import annotations

import time
from typing import Any

from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text

_OPS = {"echo": lambda s: s, "upper": str.upper, "reverse": lambda s: s[::-1]}


class EchoModel(TextToTextModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = options or {}
        content = str(opts.get("prefix", "")) + _OPS[self.id](input_text(input))
        return Text.from_string(
            content,
            metadata={"generation_prompt": self.generation_prompt(input, opts, started)},
            source=input if isinstance(input, Text) else None,
        )


class EchoProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: EchoModel}
