"""Single-service docker-compose files, read without a ``docker compose`` binary.

Only the keys one service needs are understood; anything else is a clear error naming the
key, so a service never silently runs differently from what its compose file says.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ServiceError
from ..manifest import load_yaml

log = logging.getLogger(__name__)

# Applied to the container.
SUPPORTED_KEYS = {"build", "image", "ports", "environment", "healthcheck", "command", "entrypoint", "working_dir",
                  "volumes", "labels", "expose", "deploy", "mem_limit", "cpus", "pids_limit"}
# Accepted and not applied: the worker owns naming, networking and the container's lifecycle.
TOLERATED_KEYS = {"restart", "container_name", "networks", "stop_grace_period", "init"}
TOP_LEVEL_KEYS = {"version", "services", "volumes", "networks", "name"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
BUILD_KEYS = {"context", "dockerfile", "args", "target", "labels"}
_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_DURATION_NS = {"us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
#: Docker's own rule for volume names: a named volume, never a host path.
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
VOLUME_KEYS = {"type", "source", "target", "read_only"}
#: Docker's byte units (``512m``, ``2g``, ``1gb``), binary multiples as the engine reads them.
_BYTES = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
RESOURCE_KEYS = {"memory", "cpus", "pids"}


@dataclass(frozen=True)
class PortMapping:
    """One container port; it is always published on 127.0.0.1 at a port Docker picks."""

    container: int
    protocol: str = "tcp"


@dataclass
class ComposeService:
    """What the worker runs for the one service of a compose file."""

    name: str
    image: str | None = None
    build_context: Path | None = None
    dockerfile: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    build_target: str | None = None
    ports: list[PortMapping] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    healthcheck: dict[str, Any] | None = None
    command: str | list[str] | None = None
    entrypoint: str | list[str] | None = None
    working_dir: str | None = None
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=lambda: Limits())


@dataclass(frozen=True)
class Limits:
    """A container's resource limits; ``None`` where neither the manifest nor the compose file sets one."""

    memory: int | None = None
    """Bytes (Docker's ``Memory``; swap is not added on top)."""
    nano_cpus: int | None = None
    """Billionths of a core (Docker's ``NanoCpus``)."""
    pids: int | None = None
    """Processes and threads (Docker's ``PidsLimit``)."""

    def over(self, base: Limits) -> Limits:
        """These limits, with ``base``'s where these set none."""
        return Limits(self.memory if self.memory is not None else base.memory,
                      self.nano_cpus if self.nano_cpus is not None else base.nano_cpus,
                      self.pids if self.pids is not None else base.pids)


def byte_size(value: Any, where: str) -> int:
    """Docker's sizes (``512m``, ``2g``, ``1gb`` or a bare number of bytes) as bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _BYTES.match(value.strip()) if isinstance(value, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise ServiceError(f"{where}: {value!r} is not a size (e.g. 512m, 2g)")
    return int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()])


def parse_limits(memory: Any, cpus: Any, pids: Any, where: str) -> Limits:
    """Limits from the manifest's ``docker.resources`` or a compose service's keys (any may be None)."""
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, (int, float, str))):
        raise ServiceError(f"{where}: cpus {cpus!r} must be a number of cores (e.g. 1.5)")
    try:
        cores = float(cpus) if cpus is not None else None
    except ValueError:
        raise ServiceError(f"{where}: cpus {cpus!r} must be a number of cores (e.g. 1.5)") from None
    if cores is not None and not cores > 0:
        raise ServiceError(f"{where}: cpus must be more than 0, not {cpus!r}")
    if pids is not None and (isinstance(pids, bool) or not isinstance(pids, int) or pids < 1):
        raise ServiceError(f"{where}: pids {pids!r} must be a whole number of at least 1")
    return Limits(memory=byte_size(memory, f"{where}: memory") if memory is not None else None,
                  nano_cpus=round(cores * 1e9) if cores is not None else None, pids=pids)


def _compose_limits(raw: dict[str, Any], where: str) -> Limits:
    """``deploy.resources.limits`` (memory, cpus, pids) over the older ``mem_limit``/``cpus``/``pids_limit``."""
    deploy = raw.get("deploy") or {}
    if not isinstance(deploy, dict) or set(deploy) - {"resources"}:
        raise ServiceError(f"{where}: 'deploy' supports only 'resources.limits' (memory, cpus, pids)")
    resources = deploy.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - {"limits", "reservations"}:
        raise ServiceError(f"{where}: 'deploy.resources' supports 'limits' (and ignores 'reservations')")
    limits = resources.get("limits") or {}
    if not isinstance(limits, dict) or set(limits) - RESOURCE_KEYS:
        raise ServiceError(f"{where}: 'deploy.resources.limits' supports {sorted(RESOURCE_KEYS)}")
    legacy = parse_limits(raw.get("mem_limit"), raw.get("cpus"), raw.get("pids_limit"), where)
    return parse_limits(limits.get("memory"), limits.get("cpus"), limits.get("pids"),
                        f"{where}: 'deploy.resources.limits'").over(legacy)


def interpolate(value: str, env: dict[str, str] | None = None, where: str = "compose file") -> str:
    """Compose variable substitution: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``$$``."""
    values: Mapping[str, str] = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("plain"):
            return values.get(m.group("plain"), "")
        expr = m.group("braced")
        for op in (":-", "-", ":?", "?"):
            if op in expr:
                name, _, default = expr.partition(op)
                val = values.get(name)
                if op == ":-":
                    return val if val else default
                if op == "-":
                    return val if val is not None else default
                if not val if op == ":?" else val is None:
                    raise ServiceError(f"{where}: variable {name!r} is required: {default or 'not set'}")
                return val or ""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", expr):
            raise ServiceError(f"{where}: invalid variable substitution '${{{expr}}}'")
        return values.get(expr, "")

    return _VAR.sub(sub, value)


def _interpolate_all(value: Any, env: dict[str, str] | None, where: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, env, where)
    if isinstance(value, list):
        return [_interpolate_all(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate_all(v, env, where) for k, v in value.items()}
    return value


def duration_ns(value: Any, where: str) -> int:
    """Compose durations (``30s``, ``1m30s``, ``500ms``, or bare seconds) as nanoseconds for Docker."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value * 1_000_000_000)
    if isinstance(value, str):
        text = value.strip()
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return int(sum(float(n) * _DURATION_NS[u] for n, u in parts))
    raise ServiceError(f"{where}: {value!r} is not a duration (e.g. 30s, 1m30s, 500ms)")


def seconds(value: Any, where: str) -> float:
    return duration_ns(value, where) / 1_000_000_000


def parse_port(spec: Any, where: str) -> PortMapping:
    """``80``, ``"80/udp"``, ``"8080:80"``, ``"${X_HOST_PORT:-0}:80"``, ``"127.0.0.1::80"`` or the long form.

    Only the container side is kept: a fixed host port or host address (``"80:80"``, ``"10.0.0.5:8081:81"``)
    would let a service repository claim a port or an interface of the worker's host, so the port is
    published on 127.0.0.1 at a port Docker picks, and the replacement is logged.
    """
    if isinstance(spec, dict):
        unknown = set(spec) - {"target", "published", "protocol", "host_ip", "mode", "name", "app_protocol"}
        if unknown:
            raise ServiceError(f"{where}: port key {sorted(unknown)[0]!r} is not supported")
        if "target" not in spec:
            raise ServiceError(f"{where}: long-form port {spec!r} has no 'target'")
        return _mapping(str(spec["target"]), str(spec.get("published") or "0"), str(spec.get("host_ip") or ""),
                        str(spec.get("protocol") or "tcp"), spec, where)
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise ServiceError(f"{where}: port {spec!r} is neither a number nor a string")
    text, _, proto = str(spec).strip().partition("/")
    parts = text.rsplit(":", 2)
    if len(parts) == 1:
        return _mapping(parts[0], "0", "", proto or "tcp", spec, where)
    if len(parts) == 2:
        return _mapping(parts[1], parts[0] or "0", "", proto or "tcp", spec, where)
    return _mapping(parts[2], parts[1] or "0", parts[0], proto or "tcp", spec, where)


def _mapping(container: str, host: str, host_ip: str, proto: str, spec: Any, where: str) -> PortMapping:
    if "-" in container or "-" in host:
        raise ServiceError(f"{where}: port ranges ({host}:{container}) are not supported")
    if not container.isdigit() or not host.isdigit() or not 0 < int(container) < 65536:
        raise ServiceError(f"{where}: port {host}:{container} is not numeric")
    if proto not in ("tcp", "udp"):
        raise ServiceError(f"{where}: port protocol {proto!r} is not tcp or udp")
    if int(host) or host_ip not in ("", "127.0.0.1"):
        log.warning("%s: port mapping %r is published on 127.0.0.1 at a port Docker picks instead "
                    "(services never take a fixed host port or address)", where, spec)
    return PortMapping(int(container), proto)


def parse_environment(value: Any, where: str) -> dict[str, str]:
    """``KEY=value`` lists or maps; a bare ``KEY`` takes the worker's own value, as compose does."""
    if value is None:
        return {}
    out: dict[str, str] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out[str(k)] = "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
        return out
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise ServiceError(f"{where}: environment entry {item!r} is not KEY=value")
            key, sep, val = item.partition("=")
            if sep:
                out[key.strip()] = val
            elif key.strip() in os.environ:
                out[key.strip()] = os.environ[key.strip()]
        return out
    raise ServiceError(f"{where}: 'environment' must be a list of KEY=value or a map")


def parse_healthcheck(value: Any, where: str) -> dict[str, Any] | None:
    """A compose healthcheck as the Docker SDK's ``healthcheck`` argument (durations in ns)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ServiceError(f"{where}: 'healthcheck' must be a map")
    unknown = set(value) - HEALTHCHECK_KEYS
    if unknown:
        raise ServiceError(f"{where}: healthcheck key {sorted(unknown)[0]!r} is not supported")
    if value.get("disable"):
        return {"test": ["NONE"]}
    test = value.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not (isinstance(test, list) and test and all(isinstance(t, str) for t in test)):
        raise ServiceError(f"{where}: healthcheck 'test' must be a string or a list of strings")
    out: dict[str, Any] = {"test": test}
    for key, sdk in (("interval", "interval"), ("timeout", "timeout"), ("start_period", "start_period"),
                     ("start_interval", "start_interval")):
        if key in value:
            out[sdk] = duration_ns(value[key], f"{where}: healthcheck '{key}'")
    if "retries" in value:
        if not isinstance(value["retries"], int):
            raise ServiceError(f"{where}: healthcheck 'retries' must be an integer")
        out["retries"] = value["retries"]
    out.pop("start_interval", None)  # not in every engine's API; the worker polls on its own
    return out


def _parse_volumes(value: Any, declared: set[str], where: str) -> dict[str, dict[str, str]]:
    """Named volumes the file declares at top level, or anonymous ones: a service repository must not
    mount paths of the worker's host (an absolute, relative or ``~`` source, the Docker socket)."""
    if not isinstance(value, list):
        if value is None:
            return {}
        raise ServiceError(f"{where}: 'volumes' must be a list")
    out: dict[str, dict[str, str]] = {}
    for item in value:
        if isinstance(item, dict):
            unknown = set(item) - VOLUME_KEYS
            if unknown:
                raise ServiceError(f"{where}: volume key {sorted(unknown)[0]!r} is not supported")
            src, dst, mode = item.get("source"), item.get("target"), "ro" if item.get("read_only") else "rw"
            if item.get("type", "volume") != "volume":
                raise ServiceError(f"{where}: 'volumes' entry {item!r} is of type {item.get('type')!r}; "
                                   "only named volumes are supported")
        elif isinstance(item, str):
            parts = item.split(":")
            if len(parts) > 3:
                raise ServiceError(f"{where}: 'volumes' entry {item!r} is not NAME:PATH[:ro|rw]")
            src, dst = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
            mode = parts[2] if len(parts) > 2 else "rw"
        else:
            raise ServiceError(f"{where}: volume entry {item!r} is neither a string nor a map")
        if mode not in ("ro", "rw"):
            raise ServiceError(f"{where}: 'volumes' entry {item!r}: mode {mode!r} is not ro or rw")
        if not isinstance(dst, str) or not dst.startswith("/"):
            raise ServiceError(f"{where}: 'volumes' entry {item!r} needs an absolute 'target' in the container")
        if src is None or src == "":
            continue  # anonymous volume: the image's own VOLUME semantics apply
        if not isinstance(src, str) or not _VOLUME_NAME.match(src):
            raise ServiceError(f"{where}: 'volumes' entry {item!r} is a host bind mount, which is not supported "
                               "(use a named volume declared under the top-level 'volumes')")
        if src not in declared:
            raise ServiceError(f"{where}: volume {src!r} is not declared under the top-level 'volumes'")
        out[src] = {"bind": dst, "mode": mode}
    return out


def inside(base: Path, rel: Any, where: str) -> Path:
    """``base / rel`` resolved (links followed), which must stay inside ``base``; ``where`` names the field."""
    if not isinstance(rel, str) or not rel:
        raise ServiceError(f"{where} must be a relative path")
    path = (base / rel).resolve()
    if not path.is_relative_to(base.resolve()):
        raise ServiceError(f"{where} {rel!r} points outside the repository")
    return path


def load_compose(path: Path, service_name: str | None = None, env: dict[str, str] | None = None,
                 origin: str | None = None) -> ComposeService:
    """Read ``path`` and return its one service (``service_name`` picks it when there are several)."""
    where = f"{origin}: {path.name}" if origin else path.name
    if not path.is_file():
        raise ServiceError(f"compose file {path.name!r} does not exist in the service repository")
    data = load_yaml(path, where, ServiceError)
    if not isinstance(data, dict):
        raise ServiceError(f"{where} must be a mapping")
    for key in data:
        if key not in TOP_LEVEL_KEYS and not str(key).startswith("x-"):
            raise ServiceError(f"{where}: top-level key {key!r} is not supported (supported: {sorted(TOP_LEVEL_KEYS)})")
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        raise ServiceError(f"{where}: no 'services' defined")
    if service_name is None:
        if len(services) != 1:
            raise ServiceError(f"{where} defines {len(services)} services {sorted(services)}; "
                               "name one with docker.serviceName in MediaConduit.service.yml")
        service_name = next(iter(services))
    if service_name not in services:
        raise ServiceError(f"{where}: no service {service_name!r} (defined: {sorted(services)})")
    volumes = data.get("volumes")
    if volumes is not None and not isinstance(volumes, dict):
        raise ServiceError(f"{where}: the top-level 'volumes' must be a map of volume names")
    declared = {str(k) for k in volumes or {}}
    return parse_service(services[service_name], service_name, path.parent, declared, env, where)


def parse_service(raw: Any, name: str, base: Path, declared_volumes: set[str] | None = None,
                  env: dict[str, str] | None = None, file: str = "docker-compose.yml") -> ComposeService:
    where = f"{file}: service {name!r}"
    if not isinstance(raw, dict):
        raise ServiceError(f"{where} must be a mapping")
    for key in raw:
        if key not in SUPPORTED_KEYS and key not in TOLERATED_KEYS and not str(key).startswith("x-"):
            raise ServiceError(f"{where}: key {key!r} is not supported "
                               f"(supported: {sorted(SUPPORTED_KEYS | TOLERATED_KEYS)})")
    raw = _interpolate_all(raw, env, where)
    svc = ComposeService(name=name, image=raw.get("image"))
    build = raw.get("build")
    if build is not None:
        if isinstance(build, str):
            build = {"context": build}
        if not isinstance(build, dict):
            raise ServiceError(f"{where}: 'build' must be a path or a map")
        unknown = set(build) - BUILD_KEYS
        if unknown:
            raise ServiceError(f"{where}: build key {sorted(unknown)[0]!r} is not supported")
        svc.build_context = inside(base, build.get("context") or ".", f"{where}: build 'context'")
        if build.get("dockerfile") is not None:
            inside(svc.build_context, build["dockerfile"], f"{where}: build 'dockerfile'")
        svc.dockerfile = build.get("dockerfile")
        svc.build_args = parse_environment(build.get("args"), f"{where}: build 'args'")
        svc.build_target = build.get("target")
    if svc.image is None and svc.build_context is None:
        raise ServiceError(f"{where}: needs 'build' or 'image'")
    ports = raw.get("ports") or []
    if not isinstance(ports, list):
        raise ServiceError(f"{where}: 'ports' must be a list")
    svc.ports = [parse_port(p, f"{where}: 'ports'") for p in ports]
    for p in raw.get("expose") or []:
        mapping = parse_port(str(p), f"{where}: 'expose'")
        if all(m.container != mapping.container for m in svc.ports):
            svc.ports.append(mapping)
    svc.environment = parse_environment(raw.get("environment"), where)
    svc.healthcheck = parse_healthcheck(raw.get("healthcheck"), where)
    for key in ("command", "entrypoint"):
        value = raw.get(key)
        if value is not None and not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise ServiceError(f"{where}: {key!r} must be a string or a list of strings")
        setattr(svc, key, value)
    svc.working_dir = raw.get("working_dir")
    svc.volumes = _parse_volumes(raw.get("volumes"), declared_volumes or set(), where)
    svc.labels = parse_environment(raw.get("labels"), f"{where}: 'labels'")
    svc.limits = _compose_limits(raw, where)
    return svc
