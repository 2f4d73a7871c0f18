"""ProviderRegistry: turns a provider URL into a live provider instance, once per process."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ManifestError, MediaConduitError, ProviderLoadError
from ..manifest import PROVIDER_MANIFEST, ProviderManifest, load_provider_manifest
from ..provider import MediaProvider, ServiceHost, ServiceInfo
from ..redaction import redact_url
from ..sources import Checkout, Source, SourceCache, check_allowed, file_lock, parse_source, stable_id
from .wheel_manifest import ENTRY_POINT_GROUP, wheel_manifest

log = logging.getLogger(__name__)
_NPM_MAIN = (".js", ".mjs", ".cjs", ".ts", ".mts", ".cts")


@dataclass
class LoadedProvider:
    """A provider ready to run, with where it came from (reported in every result)."""

    provider: MediaProvider
    manifest: ProviderManifest
    checkout: Checkout

    @property
    def source(self) -> dict[str, Any]:
        return self.checkout.describe()


def pip_install(requirements: list[str], target: Path, what: str) -> Path:
    """Install into ``target`` once (atomic rename, under a lock); progress goes to the log."""
    marker = target / ".mediaconduit-complete"
    if marker.exists():
        return target
    with file_lock("pip-" + target.name):
        if marker.exists():
            return target
        log.info("installing %s for %s into %s", ", ".join(requirements), what, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".pip-"))
        cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--progress-bar", "off", "--target", str(tmp), "--", *requirements]  # never options
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            detail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
            raise ProviderLoadError(f"installing {', '.join(requirements)} for {what} failed: {detail}")
        for line in proc.stdout.splitlines():
            if line.startswith("Successfully installed"):
                log.info("%s: %s", what, line)
        (tmp / ".mediaconduit-complete").write_text("ok")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    return target


def _add_path(path: Path) -> None:
    if str(path) not in sys.path:
        sys.path.append(str(path))


def main_file(manifest: ProviderManifest, root: Path, origin: str) -> Path:
    """The provider module named by ``main``, which must be Python and inside the repository."""
    candidates = [manifest.main] if manifest.main else ["provider.py", "__init__.py"]
    for rel in candidates:
        path = (root / rel).resolve()
        if not path.is_relative_to(root.resolve()):
            raise ManifestError(f"{origin}: field 'main' {rel!r} points outside the repository")
        if path.is_dir():
            path = (path / "__init__.py").resolve()
            if not path.is_relative_to(root.resolve()):
                raise ManifestError(f"{origin}: field 'main' {rel!r} points outside the repository")
        if manifest.main and path.suffix != ".py":
            raise ProviderLoadError(f"{origin}: field 'main' {manifest.main!r} is not a Python module or package")
        if path.is_file():
            return path
        if manifest.main:
            raise ManifestError(f"{origin}: field 'main' {manifest.main!r}: no such file in the repository")
    raise ManifestError(f"{origin}: field 'main' is missing and there is no provider.py at the repository root")


def refuse_npm_provider(manifest: ProviderManifest, root: Path, origin: str) -> None:
    """The original system's providers are npm packages (``package.json``, ``main: dist/index.js``): say so,
    rather than fail later on their TypeScript or their npm version ranges."""
    main = manifest.main or ""
    if main.lower().endswith(_NPM_MAIN):
        evidence = f"its manifest's 'main' is {main!r}"
    elif (root / "package.json").is_file():
        try:
            main_file(manifest, root, origin)
            return  # a Python provider that also carries a package.json
        except MediaConduitError:
            evidence = "it has a package.json and no Python 'main'"
    else:
        return
    raise ProviderLoadError(f"{origin}: this is an npm provider of the original TypeScript MediaConduit system "
                            f"({evidence}); this worker loads Python providers, whose 'main' is a .py module "
                            "or a package folder")


def _import(path: Path, name: str) -> ModuleType:
    parent = name.rpartition(".")[0]
    if parent and parent not in sys.modules:  # so a provider package's relative imports (`from . import x`) resolve
        namespace = ModuleType(parent)
        namespace.__path__ = []
        sys.modules[parent] = namespace
    package = path.name == "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ProviderLoadError(f"importing provider module {path.name} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _provider_class(module: ModuleType, export: str | None, origin: str) -> type[MediaProvider]:
    if export:
        cls = getattr(module, export, None)
        if cls is None:
            raise ManifestError(f"{origin}: field 'exportName' {export!r}: the module defines no such name")
    else:
        found = [
            c for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, MediaProvider) and c.__module__.startswith(module.__name__)
        ]
        if len(found) != 1:
            names = [c.__name__ for c in found]
            raise ManifestError(f"{origin}: field 'exportName' is missing and the module defines {len(found)} providers {names}")
        cls = found[0]
    if not (inspect.isclass(cls) and issubclass(cls, MediaProvider)):
        raise ProviderLoadError(f"{origin}: {export!r} is not a MediaProvider subclass")
    return cls


class ProviderRegistry:
    """Per-process cache of loaded providers over the shared on-disk source cache.

    Safe under hundreds of pool threads: a loaded provider is a lock-free dict read, and the first
    load of each URL happens once, under that URL's own lock, so a slow install of one provider
    never holds up jobs for another.
    """

    def __init__(self, cache: SourceCache | None = None, service_host: ServiceHost | None = None) -> None:
        self.cache = cache or SourceCache()
        self.service_host = service_host
        self._loaded: dict[str, LoadedProvider] = {}
        self._manifests: dict[str, tuple[ProviderManifest, Checkout]] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, url: str) -> threading.RLock:
        lock = self._locks.get(url)
        if lock is None:
            with self._locks_guard:
                lock = self._locks.setdefault(url, threading.RLock())
        return lock

    def manifest(self, url: str) -> tuple[ProviderManifest, Checkout]:
        """Fetch (or reuse) the source and parse its manifest, without installing or importing code (a
        ``pypi:`` package's is read out of its wheel). A producer asks this for every job it routes: once
        read, it is a lock-free dict read."""
        lp = self._loaded.get(url)
        if lp is not None:
            return lp.manifest, lp.checkout
        read = self._manifests.get(url)
        if read is not None:
            return read
        with self._lock(url):
            if url in self._loaded:
                lp = self._loaded[url]
                return lp.manifest, lp.checkout
            if url not in self._manifests:
                check_allowed(url)
                source = parse_source(url)
                if source.kind == "pypi":
                    self._manifests[url] = wheel_manifest(source, url, self.cache.root)
                else:
                    self._manifests[url] = self._read(url, source)
            return self._manifests[url]

    def _read(self, url: str, source: Source) -> tuple[ProviderManifest, Checkout]:
        """A git or folder provider's checkout and manifest, refused early when it is not a Python provider."""
        checkout = self.cache.materialise(source)
        manifest = load_provider_manifest(checkout.root, url)
        refuse_npm_provider(manifest, checkout.root, url)
        return manifest, checkout

    def get(self, url: str) -> LoadedProvider:
        """The loaded provider for ``url``; the first call per process fetches, installs and imports."""
        loaded = self._loaded.get(url)
        if loaded is not None:
            return loaded
        with self._lock(url):
            loaded = self._loaded.get(url)
            if loaded is None:
                loaded = self._load(url)
                self._loaded[url] = loaded
            return loaded

    def loaded(self) -> list[LoadedProvider]:
        return list(self._loaded.values())

    def peek(self, url: str) -> LoadedProvider | None:
        """The provider loaded for ``url`` in this process, without loading it."""
        return self._loaded.get(url)

    def _load(self, url: str) -> LoadedProvider:
        check_allowed(url)
        source = parse_source(url)
        if source.kind == "pypi":
            return self._load_pypi(url)
        read = self._manifests.pop(url, None)
        manifest, checkout = read if read is not None else self._read(url, source)
        main = main_file(manifest, checkout.root, url)  # a bad 'main' fails before any install
        install_dependencies(manifest, url, self.cache.root)
        tag = stable_id(f"{url}@{checkout.commit}")
        provider = import_provider(manifest, checkout, main, url,
                                   f"mediaconduit_providers.{re.sub(r'[^0-9a-zA-Z_]', '_', manifest.id)}_{tag}")
        provider.service_host = self.service_host
        log.info("loaded provider %s from %s at %s", manifest.id, redact_url(url), checkout.commit or "working tree")
        return LoadedProvider(provider, manifest, checkout)

    def _load_pypi(self, url: str) -> LoadedProvider:
        source = parse_source(url)
        target = pip_install([source.location], self.cache.root / "pypi" / stable_id(source.location), f"provider {url!r}")
        _add_path(target)
        importlib.invalidate_caches()
        eps = [
            (dist, ep)
            for dist in importlib.metadata.distributions(path=[str(target)])
            for ep in dist.entry_points
            if ep.group == ENTRY_POINT_GROUP
        ]
        if not eps:
            raise ProviderLoadError(f"package {source.location!r} exposes no {ENTRY_POINT_GROUP!r} entry point")
        dist, ep = eps[0]
        try:
            cls = ep.load()
        except Exception as exc:
            raise ProviderLoadError(f"{url!r}: loading entry point {ep.value!r} failed: {type(exc).__name__}: {exc}") from exc
        if not (inspect.isclass(cls) and issubclass(cls, MediaProvider)):
            raise ProviderLoadError(f"{url!r}: entry point {ep.value!r} is not a MediaProvider subclass")
        packaged = Path(inspect.getfile(cls)).parent
        if (packaged / PROVIDER_MANIFEST).is_file():
            manifest = load_provider_manifest(packaged, url)
        else:
            manifest = ProviderManifest.model_validate(
                {"id": cls.id or ep.name, "name": cls.name or ep.name, "type": cls.type.value,
                 "capabilities": [str(c) for c in cls.capabilities]}
            )
        provider = _instantiate(cls, url)
        provider.attach_manifest(manifest)
        provider.service_host = self.service_host
        checkout = Checkout(source, packaged, None, version=f"{dist.metadata['Name']}=={dist.version}")
        provider.source = checkout
        log.info("loaded provider %s from %s", manifest.id, checkout.version)
        return LoadedProvider(provider, manifest, checkout)


def _instantiate(cls: type[MediaProvider], url: str) -> MediaProvider:
    try:
        return cls()
    except Exception as exc:
        raise ProviderLoadError(f"{url!r}: constructing {cls.__name__} failed: {type(exc).__name__}: {exc}") from exc


def install_dependencies(manifest: ProviderManifest, url: str, cache_root: Path) -> list[str]:
    """pip-install the manifest's dependencies once, into a folder under ``cache_root`` named for them, and
    put it on ``sys.path``; the requirement lines (none: nothing to do)."""
    reqs = manifest.requirements(url)
    if reqs:
        _add_path(pip_install(reqs, cache_root / "deps" / stable_id("\n".join(reqs)), f"provider {manifest.id!r}"))
    return reqs


def import_provider(manifest: ProviderManifest, checkout: Checkout, main: Path, url: str,
                    module_name: str) -> MediaProvider:
    """Import ``main`` (the checkout's ``main_file``) as ``module_name`` and construct its provider class,
    with the manifest and the source attached (a relative ``serviceUrl`` resolves in the same repository)."""
    module = _import(main, module_name)
    provider = _instantiate(_provider_class(module, manifest.export_name, url), url)
    provider.attach_manifest(manifest)
    provider.source = checkout
    return provider


class DockerServices:
    """The service host a worker hands its providers: the Docker runtime, imported on first use
    (producers that only read manifests never load the Docker SDK)."""

    def ensure(self, url: str, origin: str | None = None) -> ServiceInfo:
        from ..services import get_service_registry
        from .replay import pinned_service_url

        return get_service_registry().ensure(pinned_service_url(url), origin)


_registry: ProviderRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> ProviderRegistry:
    """The process-wide registry (each worker child has its own, over the shared disk cache); the
    lock keeps the first jobs of a thread pool from building one each and loading providers twice."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = ProviderRegistry(service_host=DockerServices())
    return _registry
