"""Step: the result record is signed, a detached signature over its canonical JSON (``worker/signing.py``),
so a text output has provenance too. A cache hit is signed as delivered (its task id and timing are this
delivery's). Without a usable key the record is left unsigned; the worker said why once at start."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import ConfigurationError
from .run import Run


def sign_record(run: Run, proceed: Callable[[], None]) -> None:
    proceed()
    from ..signatures import signed_record, signing_key

    try:
        key = signing_key()
    except ConfigurationError:
        return
    if key is not None and run.result is not None:
        run.result = signed_record(run.result, key)
