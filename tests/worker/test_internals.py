"""Every private name listed in worker/internals.py exists in the installed versions."""

from __future__ import annotations

import pytest

from mediaconduit_worker.worker.internals import INTERNALS, resolve


@pytest.mark.parametrize("entry", INTERNALS, ids=[e.name for e in INTERNALS])
def test_each_private_name_still_exists(entry):
    try:
        resolve(entry)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{entry.name}, used by {entry.used_by} for {entry.buys}, is gone from the installed version: {exc}")
