"""Cowsay through the cowsay-service container (the original system's case study, in Python)."""

from __future__ import annotations

import time
from typing import Any

from mediaconduit_worker import DockerProvider, MediaCapability, Text, TextToTextModel, input_text


class CowsayModel(TextToTextModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = dict(options or {})
        assert isinstance(self.provider, CowsayDockerProvider)
        body = {"text": input_text(input), "animal": str(opts.get("animal", "cow"))}
        reply = self.provider.client().post_json("/cowsay", body)
        if not isinstance(reply, dict) or not isinstance(reply.get("cowsayOutput"), str):
            raise ValueError(f"cowsay-service answered without 'cowsayOutput': {str(reply)[:200]}")
        prompt = self.generation_prompt(input, opts, started, service=self.provider.service_metadata())
        return Text.from_string(reply["cowsayOutput"], metadata={"generation_prompt": prompt})


class CowsayDockerProvider(DockerProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: CowsayModel}
    service_timeout = 30
