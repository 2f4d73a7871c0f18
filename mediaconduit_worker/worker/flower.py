"""Flower for MediaConduit: loopback-only unless told otherwise, basic auth from MEDIACONDUIT_FLOWER_AUTH.

Flower takes its options from ``FLOWER_*`` environment variables, and plain ``celery flower`` would
listen on every interface; these defaults make both ``mediaconduit flower`` and
``celery -A mediaconduit_worker.celery_app flower`` safe without a flag. The password goes through
the environment, not the command line, so it does not show in ``ps``.
"""

from __future__ import annotations

import os
import sys

from ..settings import Settings, get_settings


def flower_env(settings: Settings | None = None) -> dict[str, str]:
    """``FLOWER_*`` defaults from MediaConduit settings (explicit FLOWER_* variables win)."""
    s = settings or get_settings()
    env = {"FLOWER_ADDRESS": s.flower_address, "FLOWER_PORT": str(s.flower_port)}
    if s.flower_auth:
        env["FLOWER_BASIC_AUTH"] = s.flower_auth
    return env


def apply_flower_defaults(argv: list[str] | None = None) -> None:
    """Called when the Celery app is built: only a ``flower`` command line is affected."""
    if "flower" not in (argv if argv is not None else sys.argv[1:]):
        return
    for name, value in flower_env().items():
        os.environ.setdefault(name, value)
