"""Service images: built from the repository with ``BASE_IMAGE``, once per source commit."""

from __future__ import annotations

import logging
from collections import deque

import docker
from docker.errors import APIError, BuildError, ImageNotFound

from ..errors import ServiceError
from ..settings import get_settings
from . import labels
from .spec import ServiceSpec

log = logging.getLogger(__name__)


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def ensure_image(client: docker.DockerClient, spec: ServiceSpec) -> str:
    """The image to run: built (only if this commit's tag is missing) or pulled; progress is logged."""
    if spec.build_context is None:
        assert spec.image is not None
        if not image_exists(client, spec.image):
            log.info("service %s: pulling %s", spec.id, spec.image)
            try:
                client.images.pull(spec.image)
            except APIError as exc:
                raise ServiceError(f"service {spec.id!r}: image {spec.image!r} is not on this engine and cannot be "
                                   f"pulled ({exc.explanation or exc}); build it or give the service a Dockerfile") from None
        return spec.image
    tag = spec.built_image
    if image_exists(client, tag):
        log.debug("service %s: image %s already built", spec.id, tag)
        return tag
    build(client, spec, tag)
    return tag


def build(client: docker.DockerClient, spec: ServiceSpec, tag: str) -> None:
    """``docker build`` through the SDK's streaming API, each step logged as it happens."""
    assert spec.build_context is not None
    dockerfile = spec.build_context / (spec.dockerfile or "Dockerfile")
    if not dockerfile.is_file():
        raise ServiceError(f"service {spec.id!r} ({spec.url}): no {dockerfile.relative_to(spec.root.resolve())} "
                           "to build the service from")
    base = get_settings().base_image
    args = {"BASE_IMAGE": base, **spec.build_args}
    log.info("service %s: building %s from %s (BASE_IMAGE=%s)", spec.id, tag, spec.url, base)
    tail: deque[str] = deque(maxlen=15)
    try:
        stream = client.api.build(
            path=str(spec.build_context), dockerfile=spec.dockerfile, tag=tag, buildargs=args, target=spec.build_target,
            rm=True, forcerm=True, decode=True,
            labels={labels.SERVICE: spec.id, labels.COMMIT: spec.revision, labels.SOURCE: spec.url,
                    labels.KEY: spec.key, labels.SCOPE: labels.scope()},
        )
        for chunk in stream:
            if "error" in chunk:
                raise BuildError(chunk["error"], list(tail))
            line = (chunk.get("stream") or chunk.get("status") or "").rstrip()
            if line:
                tail.append(line)
                if line.startswith("Step ") or line.startswith("Successfully"):
                    log.info("service %s: %s", spec.id, line)
                else:
                    log.debug("service %s: %s", spec.id, line)
    except (BuildError, APIError) as exc:
        reason = getattr(exc, "msg", None) or getattr(exc, "explanation", None) or str(exc)
        hint = ""
        if base in str(reason) or "pull access denied" in str(reason) or "not found" in str(reason):
            hint = f" (is the base image {base!r} on this engine? `make base-image` builds it offline)"
        output = "\n".join(tail)
        raise ServiceError(f"service {spec.id!r}: building {tag} failed: {reason}{hint}\n{output}".rstrip()) from None
    if not image_exists(client, tag):
        raise ServiceError(f"service {spec.id!r}: build finished but image {tag} is missing:\n" + "\n".join(tail))
    log.info("service %s: built %s", spec.id, tag)
