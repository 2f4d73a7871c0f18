"""Cowsay without Docker: the same model id as the Docker cowsay provider, run in-process."""

from __future__ import annotations

import time
from typing import Any

import cowsay

from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text


class CowsayModel(TextToTextModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = options or {}
        animal = str(opts.get("animal", "cow"))
        if animal not in cowsay.char_names:
            raise ValueError(f"unknown animal {animal!r}; choose one of {', '.join(sorted(cowsay.char_names))}")
        art = cowsay.get_output_string(animal, input_text(input))
        return Text.from_string(art, metadata={"generation_prompt": self.generation_prompt(input, opts, started)})


class CowsayLocalProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: CowsayModel}
