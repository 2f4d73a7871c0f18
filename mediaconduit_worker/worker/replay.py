"""Worker side of replay: a job may pin its Docker service to the commit a record names.

``mediaconduit replay`` sends a step's service commit in the job's ``mediaconduit_exec`` header
(``service_commit``), a channel of trusted producers only; for that job alone, the provider's service URL
is fetched at that commit instead of its branch head. A submitter's options cannot pin it.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..provider import DockerProvider, MediaProvider
from ..sources import parse_source

log = logging.getLogger(__name__)
_service_commit: contextvars.ContextVar[str | None] = contextvars.ContextVar("service_commit", default=None)
_image_ids: dict[str, str] = {}


def at_commit(url: str, commit: str) -> str:
    """A git URL pinned to ``commit``, keeping the folder it names (``#subdirectory=``, GitHub's ``/tree/``)."""
    source = parse_source(url)
    return source.at(commit, source.subdirectory)


@contextmanager
def pinned_services(commit: str | None) -> Iterator[None]:
    """The job run inside this block has its service at ``commit`` (None: at its URL's own ref)."""
    token = _service_commit.set(commit)
    try:
        yield
    finally:
        _service_commit.reset(token)


def pinned_service_url(url: str) -> str:
    """``url`` at the pinned commit when this job has one (git services only)."""
    commit = _service_commit.get()
    if commit is None or parse_source(url).kind != "git":
        return url
    return at_commit(url, commit)


def service_record(provider: MediaProvider) -> dict[str, Any] | None:
    """What the record says of a Docker provider's service: URL, id, commit, image tag and image id."""
    if not isinstance(provider, DockerProvider) or provider.service_info is None:
        return None
    return {**provider.service_metadata(), "image_id": _image_id(provider.service_info.image)}


def _image_id(image: str) -> str | None:
    """The engine's id of an image (content-addressed), looked up once per tag and process."""
    if image not in _image_ids:
        from ..services import get_service_registry

        try:
            _image_ids[image] = get_service_registry().client.images.get(image).id
        except Exception as exc:  # the record still names the tag; say why the id is missing
            log.warning("cannot read the id of image %s for the record: %s", image, exc)
            return None
    return _image_ids[image]
