"""ServiceRegistry: start or attach the Docker container a provider needs, healthy, on a real port.

Containers are labelled with the service URL's key, its source commit and this installation's
scope (a hash of ``MEDIACONDUIT_HOME``), so any worker process finds and reuses a running one;
a cross-process file lock makes two workers asking at once end with one container.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container

from ..errors import ProviderSourceError, ServiceError, TransientError
from ..provider import ServiceInfo
from ..settings import get_settings
from ..sources import SourceCache, check_allowed, file_lock, parse_source, stable_id
from .compose import Limits, PortMapping, parse_port
from .health import http_ok, resolve_health_url, tcp_ok
from .images import ensure_image
from .labels import COMMIT as L_COMMIT
from .labels import KEY as L_KEY
from .labels import MANAGED as L_MANAGED
from .labels import SCOPE as L_SCOPE
from .labels import SERVICE as L_SERVICE
from .labels import SOURCE as L_SOURCE
from .labels import scope
from .spec import ServiceSpec, load_spec

log = logging.getLogger(__name__)
LOG_TAIL = 40


def docker_client() -> docker.DockerClient:
    """A client to the engine named by ``DOCKER_HOST`` (or the local socket), checked to answer."""
    try:
        client = docker.from_env(timeout=120, max_pool_size=64)  # pool threads inspect side by side
        client.ping()
        return client
    except DockerException as exc:
        raise ServiceError(f"no Docker engine answers ({os.environ.get('DOCKER_HOST') or 'local socket'}): {exc}") from None


def logs_tail(container: Container, lines: int = LOG_TAIL) -> str:
    try:
        return container.logs(tail=lines).decode(errors="replace").rstrip() or "(no output)"
    except APIError as exc:
        return f"(logs unavailable: {exc.explanation or exc})"


def _state(container: Container) -> tuple[str, str | None]:
    """(Docker status, health status or None when the image has no healthcheck)."""
    state = container.attrs.get("State") or {}
    return state.get("Status", "unknown"), (state.get("Health") or {}).get("Status")


def _limits(container: Container) -> Limits:
    """The resource limits a container runs with (0 or unset in Docker: none)."""
    host = container.attrs.get("HostConfig") or {}
    return Limits(memory=host.get("Memory") or None, nano_cpus=host.get("NanoCpus") or None,
                  pids=host.get("PidsLimit") if (host.get("PidsLimit") or 0) > 0 else None)


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-._") or "service"


class ServiceRegistry:
    """Per-process view of the shared containers; ``ensure`` is cheap once a service is known."""

    def __init__(self, client: docker.DockerClient | None = None, cache: SourceCache | None = None) -> None:
        self._client = client
        self.cache = cache or SourceCache()
        self._known: dict[str, ServiceInfo] = {}
        self._lock = threading.RLock()
        self._url_locks: dict[str, threading.Lock] = {}
        self._reaper: threading.Thread | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = docker_client()
        return self._client

    # -- ensure ----------------------------------------------------------------------------------
    def ensure(self, url: str, origin: str | None = None) -> ServiceInfo:
        """The running, healthy service for ``url``: attached if one runs anywhere, else started.

        A known, running service is checked without a lock (pool threads inspect it side by side);
        starting or attaching takes that URL's lock, so one service starting holds up no other.
        """
        info = self._known.get(url)
        try:
            if info is not None and self._still_running(info):
                self._touch(info)
                return info
        except requests.exceptions.ConnectionError as exc:
            raise TransientError(f"Docker engine unreachable while ensuring service {url!r}: {exc}") from None
        with self._lock:
            url_lock = self._url_locks.setdefault(url, threading.Lock())
        with url_lock:
            try:
                info = self._known.get(url)
                if info is not None and self._still_running(info):
                    self._touch(info)
                    return info
                if info is not None:
                    log.warning("service %s (container %s) is no longer running; starting it again",
                                info.service_id, info.container_name)
                info = self._ensure(url, origin or url)
            except requests.exceptions.ConnectionError as exc:
                raise TransientError(f"Docker engine unreachable while ensuring service {url!r}: {exc}") from None
            self._known[url] = info
            self._touch(info)
            self._start_reaper()
            return info

    def check(self, url: str) -> tuple[bool, str]:
        """Whether a container of ``url`` runs and answers its health check, without starting one."""
        spec = self.spec_for(url)
        for container in self._containers(spec.key):
            status, health = _state(container)
            info = self._info(container, spec, container.attrs["Config"]["Image"]) if status == "running" else None
            if info is None:
                continue
            ok, why = self._probe(info, health)
            return ok, f"{spec.id} healthy at {info.base_url}" if ok else why
        return False, f"{spec.id} is not running (a job starts it)"

    def _still_running(self, info: ServiceInfo) -> bool:
        try:
            attrs = self.client.api.inspect_container(info.container_id)
        except NotFound:
            return False
        state = attrs.get("State") or {}
        return bool(state.get("Running")) and (state.get("Health") or {}).get("Status") != "unhealthy"

    def spec_for(self, url: str, origin: str | None = None) -> ServiceSpec:
        """Fetch (or reuse the pinned checkout of) a service repository and read its spec."""
        check_allowed(url)
        source = parse_source(url)
        if source.kind == "pypi":
            raise ProviderSourceError(f"service URL {url!r}: services come from a git repository or a folder, not PyPI")
        checkout = self.cache.materialise(source)
        return load_spec(checkout, f"service {url!r}" + (f" (for {origin})" if origin and origin != url else ""))

    def _ensure(self, url: str, origin: str) -> ServiceInfo:
        spec = self.spec_for(url, origin)
        with file_lock(f"service-{scope()}-{spec.key}"):
            for container in self._containers(spec.key):
                info = self._reuse(container, spec)
                if info is not None:
                    return info
            image = ensure_image(self.client, spec)
            container = self._run(spec, image)
            log.info("service %s: started container %s from %s", spec.id, container.name, image)
            return self._wait_ready(container, spec, image)

    def _reuse(self, container: Container, spec: ServiceSpec) -> ServiceInfo | None:
        """Attach to a healthy container of this commit; remove anything stale (logging why)."""
        status, health = _state(container)
        limited = _limits(container) == spec.limits
        if container.labels.get(L_COMMIT) == spec.revision and limited and status == "running" and health != "unhealthy":
            try:
                info = self._wait_ready(container, spec, container.attrs["Config"]["Image"])
                log.info("service %s: attached to running container %s (%s)", spec.id, container.name, info.base_url)
                return info
            except ServiceError as exc:
                log.warning("service %s: running container %s is not healthy, replacing it: %s",
                            spec.id, container.name, exc)
                return None  # _wait_ready removed it
        if container.labels.get(L_COMMIT) != spec.revision:
            why = f"its commit {container.labels.get(L_COMMIT, '?')[:12]} is not {spec.revision[:12]}"
        elif not limited:
            why = f"its limits {_limits(container)} are not {spec.limits}"
        else:
            why = f"it is {status}" + (f" ({health})" if health else "") + f"; last logs:\n{logs_tail(container, 10)}"
        log.warning("service %s: replacing container %s: %s", spec.id, container.name, why)
        self._remove(container)
        return None

    def _containers(self, key: str) -> list[Container]:
        return self.client.containers.list(all=True, filters={"label": [f"{L_KEY}={key}", f"{L_SCOPE}={scope()}"]})

    def _run(self, spec: ServiceSpec, image: str) -> Container:
        settings = get_settings()
        ports = spec.ports or self._exposed_ports(spec, image)
        name = f"mediaconduit-{_slug(spec.id)}-{stable_id(scope() + spec.key)}"
        labels = {**spec.labels, L_MANAGED: "1", L_SCOPE: scope(), L_SERVICE: spec.id, L_KEY: spec.key,
                  L_SOURCE: spec.url, L_COMMIT: spec.revision}
        kwargs: dict[str, Any] = dict(
            image=image, name=name, detach=True, labels=labels, environment=spec.environment,
            ports={f"{p.container}/{p.protocol}": ("127.0.0.1", None) for p in ports},  # Docker picks the port
            healthcheck=spec.healthcheck, command=spec.command, entrypoint=spec.entrypoint,
            working_dir=spec.working_dir, volumes={self.volume_name(spec, v): m for v, m in spec.volumes.items()} or None,
            # Limits from the manifest, the compose file or the settings (spec.py); swap adds nothing.
            mem_limit=spec.limits.memory, memswap_limit=spec.limits.memory, nano_cpus=spec.limits.nano_cpus,
            pids_limit=spec.limits.pids,
        )
        if settings.docker_network:
            self._ensure_network(settings.docker_network)
            kwargs["network"] = settings.docker_network
        try:
            return self.client.containers.run(**{k: v for k, v in kwargs.items() if v is not None})
        except APIError as exc:
            raise ServiceError(f"service {spec.id!r}: starting a container from {image} failed: "
                               f"{exc.explanation or exc}") from None

    @staticmethod
    def volume_name(spec: ServiceSpec, name: str) -> str:
        """The Docker volume behind a compose file's named volume: this installation's and this service
        URL's own, so a service never mounts another's data (the stack's Redis volume, say) by naming it."""
        return f"mediaconduit-{_slug(name)}-{stable_id(scope() + spec.key)}"

    def _exposed_ports(self, spec: ServiceSpec, image: str) -> list[PortMapping]:
        """No ports in manifest or compose file: publish what the image EXPOSEs."""
        exposed = (self.client.images.get(image).attrs.get("Config") or {}).get("ExposedPorts") or {}
        ports = [parse_port(p, f"image {image}") for p in sorted(exposed)]
        if not ports:
            raise ServiceError(f"service {spec.id!r} names no port: give docker.ports in MediaConduit.service.yml "
                               "or 'ports' in its compose file")
        return ports

    def _ensure_network(self, name: str) -> None:
        if not self.client.networks.list(names=[name]):
            try:
                self.client.networks.create(name, driver="bridge")
            except APIError as exc:
                if exc.status_code != 409:
                    raise ServiceError(f"cannot create Docker network {name!r}: {exc.explanation or exc}") from None

    # -- readiness -------------------------------------------------------------------------------
    def _info(self, container: Container, spec: ServiceSpec, image: str) -> ServiceInfo | None:
        """Ports as Docker assigned them; None while they are not published yet."""
        published = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        container_ports: list[int] = []
        host_ports: list[int] = []
        for key in sorted(published, key=lambda k: int(k.split("/")[0])):
            container_ports.append(int(key.split("/")[0]))
        order = [p.container for p in spec.ports] or container_ports
        container_ports = [p for p in order if p in container_ports] + [p for p in container_ports if p not in order]
        for cport in container_ports:
            bindings = published.get(f"{cport}/tcp") or published.get(f"{cport}/udp") or []
            host = next((int(b["HostPort"]) for b in bindings if b.get("HostPort")), 0)
            if not host:
                return None
            host_ports.append(host)
        if not host_ports:
            return None
        network = get_settings().docker_network
        if network:
            base_url = f"http://{container.name}:{container_ports[0]}"
            port_map = {c: c for c in container_ports}
        else:
            base_url = f"http://127.0.0.1:{host_ports[0]}"
            port_map = dict(zip(container_ports, host_ports))
        main = port_map[container_ports[0]]
        return ServiceInfo(
            service_id=spec.id, url=spec.url, key=spec.key, container_id=container.id, container_name=container.name,
            ports=host_ports, container_ports=container_ports, base_url=base_url, commit=spec.revision, image=image,
            health_url=resolve_health_url(spec.health_url, base_url, port_map, main),
        )

    def _wait_ready(self, container: Container, spec: ServiceSpec, image: str) -> ServiceInfo:
        """Wait until running, ports published and health passing; else remove it and raise with its logs."""
        deadline = time.monotonic() + spec.startup_timeout
        delay, why = 0.02, "not started"
        while True:
            try:
                container.reload()
            except NotFound:
                raise ServiceError(f"service {spec.id!r}: container {container.name} disappeared while starting") from None
            status, health = _state(container)
            if status in ("exited", "dead"):
                code = (container.attrs.get("State") or {}).get("ExitCode")
                tail = logs_tail(container)
                self._remove(container)
                raise ServiceError(f"service {spec.id!r}: container {container.name} exited with code {code} "
                                   f"before becoming healthy; last logs:\n{tail}")
            if status == "running":
                info = self._info(container, spec, image)
                if info is None:
                    why = "ports not published yet"
                elif health == "unhealthy":
                    why = "Docker healthcheck reports unhealthy"
                else:
                    ok, why = self._probe(info, health)
                    if ok:
                        return info
            else:
                why = f"container is {status}"
            if time.monotonic() >= deadline:
                tail = logs_tail(container)
                self._remove(container)
                raise ServiceError(f"service {spec.id!r}: container {container.name} did not become healthy within "
                                   f"{spec.startup_timeout:g}s ({why}); last logs:\n{tail}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    @staticmethod
    def _probe(info: ServiceInfo, health: str | None) -> tuple[bool, str]:
        if info.health_url:
            ok, why = http_ok(info.health_url)
            return ok, (f"GET {info.health_url}: {why}" if not ok else "")
        if health is not None:
            return health == "healthy", f"Docker healthcheck is {health}"
        host = info.base_url.split("//", 1)[1].rsplit(":", 1)[0]
        return tcp_ok(host, info.container_ports[0] if get_settings().docker_network else info.ports[0])

    # -- lifecycle -------------------------------------------------------------------------------
    def _remove(self, container: Container) -> None:
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            log.warning("removing container %s failed: %s", container.name, exc.explanation or exc)
        # No self._lock here: the reaper calls this holding a file lock that ensure() may be waiting for.
        for url, info in list(self._known.items()):
            if info.container_id == container.id:
                self._known.pop(url, None)

    def _usage_file(self, key: str) -> Path:
        return get_settings().cache_dir / "services" / f"{scope()}-{key}.used"

    def _touch(self, info: ServiceInfo) -> None:
        """Record a use (shared by all processes via the file's mtime) for the idle timeout."""
        path = self._usage_file(info.key)
        try:
            os.utime(path)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def last_used(self, container: Container) -> float:
        """When any process last used it; a container nobody recorded starts its idle clock now."""
        path = self._usage_file(container.labels.get(L_KEY, ""))
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            return time.time()

    def reap_idle(self, idle_timeout: float | None = None) -> list[str]:
        """Stop and remove this installation's services unused for ``idle_timeout`` seconds."""
        timeout = get_settings().service_idle_timeout if idle_timeout is None else idle_timeout
        stopped = []
        for container in self.managed():
            key = container.labels.get(L_KEY, "")
            with file_lock(f"service-{scope()}-{key}"):
                idle = time.time() - self.last_used(container)
                if idle >= timeout:
                    log.info("service %s: idle for %.0fs, stopping container %s",
                             container.labels.get(L_SERVICE), idle, container.name)
                    self._remove(container)
                    stopped.append(container.name)
        return stopped

    def _start_reaper(self) -> None:
        """One daemon thread per process enforces ``service_idle_timeout``."""
        timeout = get_settings().service_idle_timeout
        with self._lock:
            if timeout <= 0 or (self._reaper is not None and self._reaper.is_alive()):
                return
            self._reaper = threading.Thread(target=self._reap_loop, args=(timeout,), name="mediaconduit-service-reaper",
                                            daemon=True)
            self._reaper.start()

    def _reap_loop(self, timeout: float) -> None:
        period = max(1.0, min(60.0, timeout / 3))
        while True:
            time.sleep(period)
            try:
                self.reap_idle(timeout)
            except Exception as exc:  # the reaper must never take the worker down
                log.warning("idle service check failed: %s", exc)

    def managed(self, all_scopes: bool = False) -> list[Container]:
        """Containers this installation (or, with ``all_scopes``, any) started."""
        labels = [f"{L_MANAGED}=1"] + ([] if all_scopes else [f"{L_SCOPE}={scope()}"])
        return self.client.containers.list(all=True, filters={"label": labels})

    def find(self, ident: str, all_scopes: bool = False) -> list[Container]:
        """Containers matching a service id, container name, source URL or container id prefix."""
        return [c for c in self.managed(all_scopes)
                if ident in (c.labels.get(L_SERVICE), c.name, c.labels.get(L_SOURCE)) or c.id.startswith(ident)]

    def stop(self, ident: str) -> list[str]:
        """Stop and remove the matching containers (under their lock, so no job is mid-start)."""
        names = []
        for container in self.find(ident):
            with file_lock(f"service-{scope()}-{container.labels.get(L_KEY, '')}"):
                self._remove(container)
            names.append(container.name)
        return names

    def remove_images(self) -> list[str]:
        """Images this installation built (test teardown): the next build starts from the base image again."""
        removed = []
        for image in self.client.images.list(filters={"label": [f"{L_SCOPE}={scope()}"]}):
            try:
                self.client.images.remove(image.id, force=True)
                removed.append(image.tags[0] if image.tags else image.short_id)
            except APIError as exc:
                log.warning("removing image %s failed: %s", image.short_id, exc.explanation or exc)
        return removed

    def remove_all(self) -> list[str]:
        """Every container of this installation, gone (test teardown, ``services stop --all``)."""
        names = []
        for container in self.managed():
            self._remove(container)
            names.append(container.name)
        return names


_registry: ServiceRegistry | None = None
_registry_pid: int | None = None
_registry_lock = threading.Lock()


def get_service_registry() -> ServiceRegistry:
    """The process-wide registry; a forked worker child gets its own (Docker clients do not survive fork)."""
    global _registry, _registry_pid
    with _registry_lock:
        if _registry is None or _registry_pid != os.getpid():
            _registry, _registry_pid = ServiceRegistry(), os.getpid()
        return _registry


def describe(container: Container) -> dict[str, Any]:
    """One row of ``mediaconduit services ls``."""
    status, health = _state(container)
    limits = _limits(container)
    published = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    ports = [f"{b['HostIp']}:{b['HostPort']}->{k}" for k, bs in published.items() for b in (bs or [])]
    return {
        "service": container.labels.get(L_SERVICE), "container": container.name, "id": container.short_id,
        "status": status + (f" ({health})" if health else ""), "ports": ports,
        "commit": (container.labels.get(L_COMMIT) or "")[:12], "source": container.labels.get(L_SOURCE),
        "limits": {"memory": limits.memory, "cpus": limits.nano_cpus / 1e9 if limits.nano_cpus else None,
                   "pids": limits.pids},
    }

