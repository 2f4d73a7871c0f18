"""``MEDIACONDUIT_PROVIDER_ALLOW``: which provider and service URLs may be loaded at all."""

from __future__ import annotations

import functools

from ..errors import ConfigurationError, ProviderNotAllowedError, ProviderSourceError
from ..settings import get_settings
from .urls import locator_of, parse_source


def _allow_list() -> tuple[tuple[str, tuple[str, ...]], ...]:
    return _parsed_allow_list(get_settings().provider_allow or "")


@functools.lru_cache(maxsize=4)
def _parsed_allow_list(allow: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Parsed once per setting: producers and workers check every job's provider URL against it."""
    out = []
    for entry in (e.strip() for e in allow.split(",")):
        if entry:
            try:
                out.append((entry, locator_of(entry, entry)))
            except ProviderSourceError as exc:
                raise ConfigurationError(f"MEDIACONDUIT_PROVIDER_ALLOW entry {entry!r} is malformed: {exc}") from None
    return tuple(out)


def allow_list_is_set() -> bool:
    """Whether ``MEDIACONDUIT_PROVIDER_ALLOW`` limits anything (unset or empty allows every URL)."""
    return bool(_allow_list())


def check_allowed(url: str) -> None:
    """Enforce ``MEDIACONDUIT_PROVIDER_ALLOW`` before anything is fetched, on producers and workers alike.

    Entries are URL prefixes matched by scheme, host, port and whole path segments (``…/MediaConduit``
    does not admit ``…/MediaConduitEvil``); folders and ``file://`` by resolved path; ``pypi:NAME`` by
    the exact package name. Unset allows every URL.
    """
    allow = _allow_list()
    if not allow:
        return
    try:
        source = parse_source(url)
        loc = source.locator
    except ProviderSourceError as exc:
        raise ProviderNotAllowedError(f"{exc}; refused by MEDIACONDUIT_PROVIDER_ALLOW") from None
    for _, prefix in allow:
        if loc[: len(prefix)] == prefix:
            return
    raise ProviderNotAllowedError(f"provider URL {url!r} is not allowed by MEDIACONDUIT_PROVIDER_ALLOW")
