"""Flower for MediaConduit: loopback-only unless told otherwise, basic auth from MEDIACONDUIT_FLOWER_AUTH.

Flower takes its options from ``FLOWER_*`` environment variables, and plain ``celery flower`` would
listen on every interface; these defaults make both ``mediaconduit flower`` and
``celery -A mediaconduit_worker.celery_app flower`` safe without a flag. The password goes through
the environment, not the command line, so it does not show in ``ps``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..settings import Settings, get_settings


def flower_env(settings: Settings | None = None) -> dict[str, str]:
    """``FLOWER_*`` defaults from MediaConduit settings (explicit FLOWER_* variables win)."""
    s = settings or get_settings()
    env = {"FLOWER_ADDRESS": s.flower_address, "FLOWER_PORT": str(s.flower_port)}
    if s.flower_auth:
        env["FLOWER_BASIC_AUTH"] = s.flower_auth
    return env


def apply_flower_defaults(argv: list[str] | None = None) -> None:
    """Called when the Celery app is built: only ``celery … flower`` (``argv``, by default this process's
    command line) is affected, not another program whose arguments say flower (``pytest -k flower``)."""
    argv = sys.argv if argv is None else argv
    program = Path(argv[0]) if argv else Path()
    if not (program.name == "celery" or program.parent.name == "celery") or "flower" not in argv[1:]:
        return
    for name, value in flower_env().items():
        os.environ.setdefault(name, value)
