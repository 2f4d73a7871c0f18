"""Labels on service containers and images: how any worker process finds what another started."""

from __future__ import annotations

from ..settings import get_settings
from ..sources import stable_id

PREFIX = "org.mediaconduit"
MANAGED = f"{PREFIX}.managed"
SCOPE = f"{PREFIX}.scope"
SERVICE = f"{PREFIX}.service"
KEY = f"{PREFIX}.key"
SOURCE = f"{PREFIX}.source"
COMMIT = f"{PREFIX}.commit"


def scope() -> str:
    """This installation (a hash of ``MEDIACONDUIT_HOME``): containers of other homes or test runs are left alone."""
    return stable_id(str(get_settings().home.resolve()))
