"""Worker side of replay: a job may pin its Docker service to the commit a record names.

``mediaconduit replay`` (its planning is ``replay_plan``) puts ``{SERVICE_PIN_OPTION: commit}`` in a
step's options; the task pops it (the model and the record never see it) and, for that job only, the
provider's service URL is fetched at that commit instead of its branch head.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from ..provider import DockerProvider, MediaProvider
from ..sources import parse_source

log = logging.getLogger(__name__)
SERVICE_PIN_OPTION = "mediaconduit.service_commit"
_service_commit: contextvars.ContextVar[str | None] = contextvars.ContextVar("service_commit", default=None)
_image_ids: dict[str, str] = {}


def at_commit(url: str, commit: str) -> str:
    """A git URL pinned to ``commit``, keeping the folder it names (``#subdirectory=``, GitHub's ``/tree/``)."""
    source = parse_source(url)
    return source.at(commit, source.subdirectory)


def pin_services(commit: Any) -> None:
    """Set (or clear, with None) the service commit for the job this thread runs now."""
    _service_commit.set(commit if isinstance(commit, str) and commit else None)


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
    info = provider.service_info
    return {"url": info.url, "id": info.service_id, "commit": info.commit, "image": info.image,
            "image_id": _image_id(info.image)}


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
