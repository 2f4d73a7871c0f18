"""Docker services: the containers providers need, built from service repositories and shared by
every worker process of an installation.

``registry`` starts or attaches a container (healthy, on a Docker-assigned port), ``spec`` merges a
service's manifest and compose file, ``compose`` reads the single-service compose subset,
``images`` builds once per commit, ``labels`` marks what we own, ``health`` probes readiness.
"""

from .registry import ServiceRegistry, describe, docker_client, get_service_registry

__all__ = ["ServiceRegistry", "describe", "docker_client", "get_service_registry"]
