"""What to run for a service repository: its manifest and optional compose file merged into one spec."""

from __future__ import annotations

import copy
import hashlib
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import ServiceError
from ..manifest import ServiceManifest, load_service_manifest
from ..settings import get_settings
from ..sources import Checkout, stable_id
from .compose import (
    RESOURCE_KEYS,
    ComposeService,
    Limits,
    PortMapping,
    inside,
    load_compose,
    parse_environment,
    parse_limits,
    parse_port,
)

DEFAULT_COMPOSE_FILES = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
DEFAULT_STARTUP_TIMEOUT = 120.0


@dataclass(kw_only=True)
class ServiceSpec(ComposeService):
    """Everything the registry needs to build, run and health-check one service: the compose
    service's settings plus where it came from and how to tell it is ready."""

    id: str
    url: str
    revision: str
    """The source commit (or a content hash for a plain folder): images are tagged with it."""
    root: Path
    health_url: str | None = None
    """Absolute (``http://localhost:__PORT__/health``) or relative (``/health``) health endpoint."""
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    @property
    def key(self) -> str:
        """Identifies this service URL: every worker asking for it shares the same container."""
        return stable_id(self.url)

    @property
    def built_image(self) -> str:
        """The tag a build produces: rebuilt only when the repository's commit changes."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.id.lower()).strip("-")[:64].strip("-") or "service"
        return f"mediaconduit/svc-{slug}:{self.revision[:12]}-{self.key}"


def folder_revision(root: Path) -> str:
    """A content hash of a folder without a commit, so editing it triggers a rebuild."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if ".git" not in p.parts and "__pycache__" not in p.parts):
        if path.is_symlink():  # hashed by where it points: a link is never followed out of the folder
            digest.update(str(path.relative_to(root)).encode() + b"\0->" + os.readlink(path).encode() + b"\0")
        elif path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return "dir-" + digest.hexdigest()[:16]


def source_revision(checkout: Checkout) -> str:
    if checkout.source.kind == "git" and checkout.commit:
        return checkout.commit
    return folder_revision(checkout.root)


def _compose_path(manifest: ServiceManifest, root: Path, origin: str) -> Path | None:
    named = manifest.docker.compose_file
    if named:
        path = inside(root, named, f"{origin}: docker.composeFile")
        if not path.is_file():
            raise ServiceError(f"{origin}: docker.composeFile {named!r} does not exist in the repository")
        return path
    found = next((n for n in DEFAULT_COMPOSE_FILES if (root / n).is_file()), None)
    return inside(root, found, f"{origin}: compose file") if found else None


def _manifest_ports(manifest: ServiceManifest, origin: str) -> list[PortMapping]:
    """``docker.ports`` are container ports; ``0`` ("any") says nothing about the container side."""
    out = []
    for p in manifest.docker.ports:
        if p in (0, "0"):
            continue
        out.append(parse_port(p, f"{origin}: docker.ports"))
    return out


def default_limits() -> Limits:
    """``MEDIACONDUIT_SERVICE_MEMORY``, ``_CPUS`` and ``_PIDS``: what a service gets when it sets no limit."""
    settings = get_settings()
    return parse_limits(settings.service_memory, settings.service_cpus, settings.service_pids,
                        "MEDIACONDUIT_SERVICE_MEMORY/_CPUS/_PIDS")


def _manifest_limits(manifest: ServiceManifest, origin: str) -> Limits:
    resources = manifest.docker.resources
    unknown = sorted(set(resources) - RESOURCE_KEYS)
    if unknown:
        raise ServiceError(f"{origin}: docker.resources key {unknown[0]!r} is not supported "
                           f"(supported: {sorted(RESOURCE_KEYS)})")
    return parse_limits(resources.get("memory"), resources.get("cpus"), resources.get("pids"),
                        f"{origin}: docker.resources")


def build_spec(manifest: ServiceManifest, checkout: Checkout, origin: str) -> ServiceSpec:
    """Merge the manifest's ``docker`` section over the compose service (manifest keys win); resource
    limits the two leave unset come from the settings, so no service runs unbounded."""
    root = checkout.root
    docker = manifest.docker
    compose_path = _compose_path(manifest, root, origin)
    svc = load_compose(compose_path, docker.service_name, origin=origin) if compose_path else ComposeService(name=manifest.id)
    spec = ServiceSpec(
        id=manifest.id, url=checkout.source.url, revision=source_revision(checkout), root=root,
        **{f.name: copy.copy(getattr(svc, f.name)) for f in fields(ComposeService)},
    )
    if docker.build is not None and spec.build_context is None:
        build = {"context": docker.build} if isinstance(docker.build, str) else dict(docker.build)
        spec.build_context = inside(root, build.get("context") or ".", f"{origin}: docker.build.context")
        spec.dockerfile = build.get("dockerfile")
        if spec.dockerfile is not None:
            inside(spec.build_context, spec.dockerfile, f"{origin}: docker.build.dockerfile")
        spec.build_args.update(parse_environment(build.get("args"), f"{origin}: docker.build.args"))
    if spec.build_context is None and spec.image is None:
        if docker.image is None and (root / "Dockerfile").is_file():
            spec.build_context = root.resolve()
        spec.image = docker.image
    if spec.build_context is not None:  # the Dockerfile, too, must not be read from outside the repository
        inside(spec.build_context, spec.dockerfile or "Dockerfile", f"{origin}: the Dockerfile")
    if spec.build_context is None and spec.image is None:
        raise ServiceError(f"{origin}: the service has no image to run: give docker.image, docker.build, "
                           "a compose 'build'/'image', or a Dockerfile at the repository root")
    if not spec.ports:
        spec.ports = _manifest_ports(manifest, origin)
    spec.environment.update(parse_environment(docker.environment, f"{origin}: docker.environment"))
    spec.limits = _manifest_limits(manifest, origin).over(spec.limits).over(default_limits())
    health = docker.health_check
    if health is not None:
        if health.url and health.endpoint:
            raise ServiceError(f"{origin}: docker.healthCheck has both 'url' and 'endpoint'; give one")
        spec.health_url = health.url or health.endpoint
        if spec.health_url and not re.match(r"^(https?://|/)", spec.health_url):
            spec.health_url = "/" + spec.health_url
        if health.startup_timeout is not None:
            spec.startup_timeout = float(health.startup_timeout)
    start_period = (spec.healthcheck or {}).get("start_period")
    if health is None or health.startup_timeout is None:
        if start_period:
            spec.startup_timeout = max(spec.startup_timeout, start_period / 1e9 + 30)
    if spec.startup_timeout <= 0:
        raise ServiceError(f"{origin}: docker.healthCheck.startupTimeout must be positive")
    return spec


def load_spec(checkout: Checkout, origin: str) -> ServiceSpec:
    """The spec of the service repository at ``checkout`` (errors name ``origin``)."""
    manifest = load_service_manifest(checkout.root, origin)
    return build_spec(manifest, checkout, origin)

