"""A ``pypi:`` provider's manifest read from its wheel, never installed or imported: producers (Flower's
host, ``mediaconduit replay``, ``batch``) route a job by it without running the package's code.

The wheel is downloaded with ``pip download --no-deps --only-binary=:all:`` (a wheel is unpacked, never
built: an sdist's build would run its code), then two members are read out of the archive: the
distribution's ``entry_points.txt`` (which module holds the provider) and the
``MediaConduit.provider.yml`` beside that module, where the worker's loader looks for it too. A package
that ships no manifest is told apart only by importing it: the producer cannot say its capability, and
routing sends the job to the default queue, where a worker decides.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import ManifestError, ProviderLoadError
from ..manifest import MAX_YAML_BYTES, PROVIDER_MANIFEST, ProviderManifest, load_provider_manifest
from ..sources import Checkout, Source, file_lock, stable_id

ENTRY_POINT_GROUP = "mediaconduit.providers"
_DONE = ".mediaconduit-complete"


def wheel_manifest(source: Source, url: str, cache_root: Path) -> tuple[ProviderManifest, Checkout]:
    """The manifest packaged in ``source``'s wheel, and a checkout naming the folder it was read into."""
    folder = cache_root / "wheels" / stable_id(source.location)
    wheel = _download(source.location, folder, url)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = _dist_info(names, wheel, url)
        entry = _entry_point(_member(archive, f"{dist_info}/entry_points.txt", url), url)
        beside = _module_folder(entry.partition(":")[0].strip(), names, url)
        member = str(beside / PROVIDER_MANIFEST) if str(beside) != "." else PROVIDER_MANIFEST
        if member not in names:
            raise ManifestError(f"{url!r}: the package ships no {PROVIDER_MANIFEST} beside its entry point "
                                f"{entry!r}; its capability is known only to a worker that imports it")
        read = folder / "manifest"
        read.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=read, prefix=".manifest-", delete=False) as out:
            out.write(_member(archive, member, url))
        os.replace(out.name, read / PROVIDER_MANIFEST)  # whole, for another process reading it at once
    manifest = load_provider_manifest(read, url)
    name, version = wheel.name.split("-")[:2]
    return manifest, Checkout(source, read, None, version=f"{name.replace('_', '-')}=={version}")


def _download(requirement: str, folder: Path, url: str) -> Path:
    """The one wheel of ``requirement``, downloaded once into ``folder`` (atomic rename, under a lock)."""
    if not (folder / _DONE).exists():
        with file_lock("wheel-" + folder.name):
            if not (folder / _DONE).exists():
                folder.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".wheel-"))
                cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
                       "--progress-bar", "off", "--no-deps", "--only-binary=:all:", "--dest", str(tmp),
                       "--", requirement]  # never options
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    shutil.rmtree(tmp, ignore_errors=True)
                    detail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
                    raise ProviderLoadError(f"downloading the wheel of {requirement} for {url!r} failed: {detail}")
                (tmp / _DONE).write_text("ok")
                if folder.exists():
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise ProviderLoadError(f"{url!r}: pip downloaded {len(wheels)} wheels of {requirement}, expected one")
    return wheels[0]


def _dist_info(names: set[str], wheel: Path, url: str) -> str:
    found = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    if len(found) != 1:
        raise ManifestError(f"{url!r}: the wheel {wheel.name} holds {len(found)} .dist-info folders, expected one")
    return found.pop()


def _member(archive: zipfile.ZipFile, name: str, url: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ManifestError(f"{url!r}: the wheel has no {name}") from None
    if info.file_size > MAX_YAML_BYTES:
        raise ManifestError(f"{url!r}: {name} in the wheel is larger than {MAX_YAML_BYTES // 1024} KiB")
    with archive.open(info) as fh:
        return fh.read(MAX_YAML_BYTES + 1)[:MAX_YAML_BYTES]


def _entry_point(text: bytes, url: str) -> str:
    """The first ``mediaconduit.providers`` entry (``module:attribute``), as the loader takes it."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text.decode("utf-8"))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ManifestError(f"{url!r}: the wheel's entry_points.txt cannot be read: {exc}") from None
    if not parser.has_section(ENTRY_POINT_GROUP) or not parser.items(ENTRY_POINT_GROUP):
        raise ManifestError(f"{url!r}: package exposes no {ENTRY_POINT_GROUP!r} entry point")
    return parser.items(ENTRY_POINT_GROUP)[0][1]


def _module_folder(module: str, names: set[str], url: str) -> PurePosixPath:
    """The folder of the file defining ``module`` (a package's own folder, a plain module's parent)."""
    parts = module.split(".")
    if not module or not all(p.isidentifier() for p in parts):
        raise ManifestError(f"{url!r}: entry point module {module!r} is not a dotted module name")
    path = PurePosixPath(*parts)
    if f"{path}/__init__.py" in names:
        return path
    if f"{path}.py" in names:
        return path.parent
    raise ManifestError(f"{url!r}: the wheel holds no module {module!r} named by its entry point")
