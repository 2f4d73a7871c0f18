"""Service health: the manifest's endpoint resolved against the real ports, probed over HTTP."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx

LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]"}


def resolve_health_url(template: str | None, base_url: str, port_map: dict[int, int], main_port: int) -> str | None:
    """Where to probe: ``/health`` joins ``base_url``; ``http://localhost:__PORT__/x`` and
    ``http://localhost:<container port>/x`` (as published manifests write it) point at the real port.

    ``port_map`` maps container ports to the ports the worker reaches them on.
    """
    if not template:
        return None
    if template.startswith("/"):
        return base_url.rstrip("/") + template
    parts = urlsplit(template.replace("__PORT__", str(main_port)))
    host = (parts.hostname or "").lower()
    if host not in LOCAL_HOSTS:
        return template  # an external health URL is used as written
    try:
        port = parts.port
    except ValueError:
        port = None
    if port in port_map:
        port = port_map[port]
    elif port not in port_map.values():
        port = main_port
    base = urlsplit(base_url)
    netloc = f"{base.hostname}:{port}"
    return urlunsplit((parts.scheme or "http", netloc, parts.path or "/", parts.query, ""))


_client: tuple[int, httpx.Client] | None = None


def _http() -> httpx.Client:
    """One client per process: building one (TLS context) costs more than the probe itself."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), httpx.Client(trust_env=False))
    return _client[1]


def http_ok(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """One probe: (True, "") on 2xx, else (False, why)."""
    try:
        response = _http().get(url, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return True, ""
    return False, f"HTTP {response.status_code}"


def tcp_ok(host: str, port: int, timeout: float = 1.0) -> tuple[bool, str]:
    """For services without an HTTP health endpoint: the port accepts connections."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"port {port}: {exc}"
