"""Step: a media output is stored with signed Content Credentials embedded (``worker/credentials.py``); the
record says what was signed and by whom, or why the output was left as it was. A text output passes by."""

from __future__ import annotations

from collections.abc import Callable

from ...assets import BinaryAsset
from .run import Run


def sign_media(run: Run, proceed: Callable[[], None]) -> None:
    proceed()
    served = run.served
    assert served is not None  # the serve step ran
    if not isinstance(served.output, BinaryAsset):
        return
    from ..credentials import sign_served  # only a media job loads the signer

    served.output, credentials = sign_served(served, run.job.input, run.record.prompt or {}, run.request.id)
    run.record.note(credentials=credentials)
