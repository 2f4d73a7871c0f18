"""A streamed job's chunks, written as its model yields them: ``output`` events (``{"chunk": text}``) and
``progress`` events in the job's event stream (``events.py``), for jobs whose stream has a reader.

A secret never leaves in a chunk: text is scrubbed of the job's secrets and of every secret shape
(``redaction.scrub``), and since a secret may arrive split over two deltas, text is written only up to
a word's end (secret values and shapes hold no whitespace), holding back as many characters as the
longest secret value that has whitespace in it. The text held back goes out with the next chunk, or at
the end. The whole output is still the job's result record; chunks only let a reader see it sooner.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from ..models import Chunk, Progress
from ..redaction import scrub
from . import events

log = logging.getLogger(__name__)

RUN_ON = 256
"""Characters held at most without whitespace (a long token, text without spaces) before they go out anyway."""


class ChunkWriter:
    """One delivery's chunks; ``sent`` counts the ``output`` events written (a stream that broke before any
    may still fail over)."""

    def __init__(self, task_id: str, secrets: tuple[str, ...]) -> None:
        self.task_id = task_id
        self.secrets = tuple(s for s in secrets if s)
        self.sent = 0
        self._held = ""
        spaced = [len(s) for s in self.secrets if any(c.isspace() for c in s)]
        self._hold = max(spaced, default=1) - 1
        self._longest = max((len(s) for s in self.secrets), default=1)

    def __call__(self, chunk: Chunk) -> None:
        if isinstance(chunk, Progress):
            data: dict[str, Any] = {"done": chunk.done, "total": chunk.total}
            if chunk.message is not None:
                data["message"] = scrub(chunk.message, self.secrets)
            self._add(events.PROGRESS, data)
            return
        self._held += chunk
        cut = self._cut()
        if cut:
            text, self._held = self._held[:cut], self._held[cut:]
            self._write(text)

    def _cut(self) -> int:
        """How much of the held text may go out now: up to its last whitespace, short of what a secret value
        with whitespace could still complete, and never through a secret value."""
        held = self._held
        limit = len(held) - self._hold
        cut = max((i + 1 for i in range(limit - 1, -1, -1) if held[i].isspace()), default=0) if limit > 0 else 0
        if not cut and len(held) > RUN_ON + self._longest:
            cut = len(held) - self._longest
        moved = True
        while moved and cut:
            moved = False
            for secret in self.secrets:
                start = held.find(secret, max(0, cut - len(secret) + 1))
                if 0 <= start < cut:
                    cut, moved = start, True
        return cut

    def finish(self, text: str | None) -> None:
        """The end of a served stream: what was held goes out; when no text was streamed (a model that cannot
        stream, a cache hit), the output's ``text`` (None: not a text output) is written as one chunk."""
        if self._held:
            self._write(self._held)
            self._held = ""
        elif not self.sent and text:
            self._write(text)

    def discard(self) -> None:
        """A stream that broke before anything was written: its held text is dropped (the next candidate's
        output, or the retried delivery's, is written instead)."""
        self._held = ""

    def broke(self, exc: BaseException) -> None:
        """A stream that broke after chunks were written: the text held goes out, then an ``error`` entry."""
        if self._held:
            self._write(self._held)
            self._held = ""
        self._add(events.OUTPUT, {"error": {"type": type(exc).__name__, "message": scrub(str(exc), self.secrets)}})

    def _write(self, text: str) -> None:
        if self._add(events.OUTPUT, {"chunk": scrub(text, self.secrets)}):
            self.sent += 1

    def _add(self, event: str, data: dict[str, Any]) -> bool:
        """Whether the event was written: a Redis failure is logged, not raised (the record holds the output)."""
        try:
            return events.add(self.task_id, event, data) is not None
        except redis.RedisError as exc:
            log.warning("job %s: an %r event was not written (%s)", self.task_id, event, exc)
            return False
