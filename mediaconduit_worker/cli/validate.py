"""``mediaconduit providers validate URL``: load a provider as a worker would and check it, by name.

Everything runs for real: the source is fetched into a fresh cache, dependencies are installed,
the module is imported, each model transforms a sample of its capability, and a Docker provider's
service is built, started on a Docker-assigned port, health-checked and stopped again.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from ..assets import Asset, Audio, BinaryAsset, Image, Text, Video, guess_mime
from ..capabilities import MediaCapability
from ..errors import InvalidInputError, MediaConduitError, UnknownModelError
from ..manifest import ProviderManifest, load_provider_manifest
from ..models import Model
from ..provider import DockerProvider, MediaProvider, ProviderModel
from ..record import describe_input
from ..redaction import REDACTED
from ..remote import RemoteProvider
from ..sources import Checkout, SourceCache, check_allowed, parse_source, stable_id
from .output import CommandError, table_console

if TYPE_CHECKING:
    from ..services import ServiceRegistry

Status = Literal["pass", "warn", "fail", "skip"]
SAMPLE_TEXT = "The quick brown fox 2026"
#: A secret-named option holding a fresh fake key: redacted in the prompt, found nowhere in the output.
CANARY_OPTION = "validate_api_key"
DEFAULT_MIME = {"audio": "audio/wav", "image": "image/png", "video": "video/mp4"}


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    seconds: float = 0.0


@dataclass
class Report:
    url: str
    provider: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed."""
        return all(c.status != "fail" for c in self.checks)

    @property
    def skipped(self) -> list[str]:
        """The checks that could not run here (no API key, an API that does not answer, a failed prerequisite)."""
        return [c.name for c in self.checks if c.status == "skip"]

    def as_json(self) -> dict[str, Any]:
        return {"url": self.url, "provider": self.provider, "ok": self.ok, "complete": not self.skipped,
                "checks": [asdict(c) for c in self.checks]}


class Failed(Exception):
    """Ends one check as failed (and the checks that need its result as skipped)."""


class Skipped(Exception):
    """Ends one check as skipped: what it checks cannot be reached from here (a model list only the API knows)."""


# -- sample inputs ------------------------------------------------------------------------------------
def sample_audio(text: str = SAMPLE_TEXT) -> bytes:
    """Speech from espeak-ng when installed, else a second of a 440 Hz tone: a real WAV either way."""
    espeak = shutil.which("espeak-ng")
    if espeak:
        proc = subprocess.run([espeak, "-v", "en-us+f2", "-s", "120", "--stdout", text], capture_output=True)
        if proc.returncode == 0 and proc.stdout[:4] == b"RIFF":
            return proc.stdout
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join((8000 if (i // 18) % 2 else -8000).to_bytes(2, "little", signed=True)
                               for i in range(16000)))
    return out.getvalue()


def sample_image(text: str = SAMPLE_TEXT) -> bytes:
    """The text rendered black on white (Pillow's bundled font, as textrender-provider does): OCR reads it."""
    try:
        from PIL import Image as PILImage
        from PIL import ImageDraw, ImageFont
    except ImportError:
        raise Failed("a sample image needs Pillow (pip install Pillow) or --input FILE") from None
    font = ImageFont.load_default(size=48)
    left, top, right, bottom = (int(v) for v in ImageDraw.Draw(PILImage.new("RGB", (1, 1))).textbbox((0, 0), text, font=font))
    image = PILImage.new("RGB", (right - left + 48, bottom - top + 48), "white")
    ImageDraw.Draw(image).text((24 - left, 24 - top), text, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def sample_video() -> bytes:
    """A second of test pattern with a 440 Hz tone (MP4), made by ffmpeg when it is installed."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise Failed("a sample video needs ffmpeg on this machine, or --input FILE")
    proc = subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-f", "lavfi",
                           "-i", "sine=frequency=440:sample_rate=16000", "-t", "1", "-c:v", "mpeg4", "-c:a", "aac",
                           "-pix_fmt", "yuv420p", "-f", "mp4", "-movflags", "frag_keyframe+empty_moov", "pipe:1"],
                          capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        raise Failed(f"ffmpeg could not make a sample video: {proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout


def _kinds(cap: MediaCapability) -> tuple[str, str]:
    source, _, target = cap.value.partition("-to-")
    return source, target


def sample_for(cap: MediaCapability, given: str | None) -> Any:
    """The input a model of ``cap`` is run on: ``--input`` (text, or a media file) or one made here."""
    kind = _kinds(cap)[0]
    if kind == "text":
        return given if given is not None else SAMPLE_TEXT
    if kind not in ("audio", "image", "video"):
        raise Failed(f"no sample input for {cap.value}; give --input FILE")
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise Failed(f"--input {given!r}: a {kind} model needs a file")
        data, mime = path.read_bytes(), guess_mime(path.name, DEFAULT_MIME[kind])
    else:
        data, mime = {"audio": sample_audio, "image": sample_image, "video": sample_video}[kind](), DEFAULT_MIME[kind]
    return {"audio": Audio, "image": Image, "video": Video}[kind].from_bytes(data, mime)


# -- the validator ------------------------------------------------------------------------------------
class Validator:
    """Runs the checks in order; a check whose prerequisite failed is reported as skipped."""

    def __init__(self, url: str, model: str | None = None, given_input: str | None = None,
                 progress: Callable[[str], Any] | None = None) -> None:
        self.url, self.model, self.given_input = url, model, given_input
        self.report = Report(url)
        self.progress = progress or (lambda _msg: None)
        self.canary = "sk-validate-" + secrets.token_hex(12)
        self.cache_root = Path(tempfile.mkdtemp(prefix="mediaconduit-validate-"))
        self.cache = SourceCache(self.cache_root)
        self._registry: ServiceRegistry | None = None

    @contextmanager
    def check(self, name: str, what: str) -> Iterator[list[str]]:
        """Times one check; the body appends notes, ``Failed`` fails it, a warning note makes it warn."""
        self.progress(f"{name}: {what}")
        started = time.perf_counter()
        notes: list[str] = []
        status: Status = "pass"
        try:
            yield notes
        except Failed as exc:
            status, notes = "fail", [str(exc)]
        except Skipped as exc:
            status, notes = "skip", [str(exc)]
        except MediaConduitError as exc:
            status, notes = "fail", [str(exc)]
        if status == "pass" and any(n.startswith("warning:") for n in notes):
            status = "warn"
        self.report.checks.append(Check(name, status, "; ".join(notes) or "ok", round(time.perf_counter() - started, 2)))

    def skip(self, name: str, why: str) -> None:
        self.report.checks.append(Check(name, "skip", why))

    def failed(self, name: str) -> bool:
        return any(c.name == name and c.status == "fail" for c in self.report.checks)

    def run(self) -> Report:
        try:
            self._run()
        finally:
            shutil.rmtree(self.cache_root, ignore_errors=True)
        return self.report

    def _run(self) -> None:
        from ..worker import loader

        checkout: Checkout | None = None
        manifest: ProviderManifest | None = None
        with self.check("manifest", f"fetching {self.url} into a fresh cache") as notes:
            check_allowed(self.url)
            source = parse_source(self.url)
            if source.kind == "pypi":
                raise Failed("PyPI providers are checked by installing them in a worker; give a git URL or folder")
            checkout = self.cache.materialise(source)
            manifest = load_provider_manifest(checkout.root, self.url)
            self.report.provider = manifest.id
            notes.extend(_manifest_notes(manifest))
        if checkout is None or manifest is None or self.failed("manifest"):
            for name in ("entrypoint", "dependencies", "models", "transform", "output", "generation-prompt",
                         "errors", "secrets"):
                self.skip(name, "the manifest did not pass")
            return
        with self.check("dependencies", "installing dependencies") as notes:
            reqs = loader.install_dependencies(manifest, self.url, self.cache_root)
            notes.append(f"installed {', '.join(reqs)}" if reqs else "none declared")
        provider: MediaProvider | None = None
        if self.failed("dependencies"):
            self.skip("entrypoint", "the dependencies did not install")
        else:
            with self.check("entrypoint", "importing main and exportName") as notes:
                main = loader.main_file(manifest, checkout.root, self.url)
                provider = loader.import_provider(  # under the package a worker imports providers in
                    manifest, checkout, main, self.url, f"mediaconduit_providers.validate_{stable_id(str(self.cache_root))}")
                cls = type(provider)
                notes.append(f"{main.name}: {cls.__name__} ({_kind_of(provider)})")
                if isinstance(provider, DockerProvider) and not manifest.service_url and \
                        type(provider).get_service_url is DockerProvider.get_service_url:
                    raise Failed(f"{cls.__name__} is a DockerProvider but the manifest has no 'serviceUrl'")
                if manifest.type == "remote" and not isinstance(provider, RemoteProvider):
                    notes.append(f"warning: manifest says type remote but {cls.__name__} is not a RemoteProvider")
        if provider is None:
            for name in ("models", "transform", "output", "generation-prompt", "errors", "secrets"):
                self.skip(name, "the provider did not load")
            return
        self._after_load(provider, manifest)

    def _after_load(self, provider: MediaProvider, manifest: ProviderManifest) -> None:
        keyless = isinstance(provider, RemoteProvider) and provider.requires_api_key and not provider.config.get("api_key")
        models: list[ProviderModel] = []
        with self.check("models", "listing models") as notes:
            models = provider.models
            from_api = isinstance(provider, RemoteProvider) and (keyless or provider._discovery_error is not None)
            if not models and from_api:
                error = provider._discovery_error if isinstance(provider, RemoteProvider) else None
                why = "no API key" if keyless else f"the API does not answer: {error}"
                raise Skipped(f"the model list comes from the API, which was not asked ({why})")
            if not models:
                raise Failed("the provider lists no models (manifest 'models' is empty and discovery found none)")
            bare = [m.id for m in models if not m.capabilities]
            if bare:
                raise Failed(f"model(s) {', '.join(bare)} have no capability: a worker cannot route their jobs")
            if models:
                notes.append(", ".join(f"{m.id} ({', '.join(c.value for c in m.capabilities)})" for m in models[:12])
                             + (f" and {len(models) - 12} more" if len(models) > 12 else ""))
        if isinstance(provider, RemoteProvider):
            keyless = self._remote(provider, keyless)
        started: list[str] = []
        if isinstance(provider, DockerProvider):
            started = self._service(provider)
        try:
            if keyless or self.failed("models") or self.failed("service"):
                why = "the remote API is not available" if keyless else "the models or the service failed"
                for name in ("transform", "output", "generation-prompt", "secrets"):
                    self.skip(name, why)
            else:
                self._transforms(provider, models)
            self._errors(provider, keyless)
        finally:
            self._stop(started)

    def _remote(self, provider: RemoteProvider, keyless: bool) -> bool:
        """The ``remote`` check: skipped (naming the variable) without a key or a reachable API; True then."""
        if keyless:
            env = provider.config_env.get("api_key", "its API key variable")
            self.skip("remote", f"no API key: set {env} to call {provider.label!r} (transform, output, "
                                "generation-prompt and secrets need it)")
            return True
        unreachable = provider._discovery_error
        if unreachable is not None:
            env = provider.config_env.get("base_url", "its base URL variable")
            self.skip("remote", f"the API does not answer (set {env}): {unreachable}")
            return True
        self.report.checks.append(Check("remote", "pass", f"API at {provider.base_url} answers"))
        return False

    def _service(self, provider: DockerProvider) -> list[str]:
        """Build and start the service on a Docker-assigned port; the containers to stop afterwards."""
        started: list[str] = []
        with self.check("service", "building and starting the Docker service") as notes:
            from ..services import ServiceRegistry

            try:
                registry = ServiceRegistry(cache=self.cache)
                before = {c.id for c in registry.managed()}
            except Exception as exc:  # no engine: the check fails naming why
                raise Failed(f"no Docker engine answers: {type(exc).__name__}: {exc}") from None
            self._registry = registry
            provider.service_host = registry
            info = provider.ensure_service()
            if info.container_id not in before:
                started.append(info.container_id)
            notes.append(f"{info.service_id} at {info.base_url} (host port {info.ports[0]} assigned by Docker), "
                         f"healthy at {info.health_url or 'its port'}, image {info.image}")
            if info.container_id in before:
                notes.append("attached to a container already running (left running)")
        return started

    def _stop(self, containers: list[str]) -> None:
        for container_id in containers:
            assert self._registry is not None
            stopped = self._registry.stop(container_id)
            check = next(c for c in self.report.checks if c.name == "service")
            check.detail += f"; stopped {', '.join(stopped)}"

    def _transforms(self, provider: MediaProvider, models: list[ProviderModel]) -> None:
        chosen = [m for m in models if self.model in (None, m.id)]
        if self.model and not chosen:
            chosen = [provider.get_model_info(self.model)]
        results: list[tuple[ProviderModel, Any, Asset]] = []
        strict: list[str] = []  # models that refuse options they do not declare: the canary cannot reach them
        with self.check("transform", f"running {len(chosen)} model(s) on samples") as notes:
            for info in chosen:
                cap = info.capabilities[0]
                self.progress(f"transform: {info.id} ({cap.value})")
                sample = sample_for(cap, self.given_input)
                model: Model = provider.get_model(info.id)
                try:
                    try:
                        out = model.transform(sample, {CANARY_OPTION: self.canary})
                    except InvalidInputError as exc:
                        if CANARY_OPTION not in str(exc):
                            raise
                        strict.append(info.id)
                        out = model.transform(sample, {})
                except MediaConduitError:
                    raise
                except Exception as exc:
                    raise Failed(f"model {info.id!r} raised {type(exc).__name__}: {exc}") from None
                if not isinstance(out, Asset):
                    raise Failed(f"model {info.id!r} returned {type(out).__name__}, not an asset")
                results.append((info, sample, out))
                notes.append(f"{info.id}: {_summary(out)}")
        if self.failed("transform"):
            for name in ("output", "generation-prompt", "secrets"):
                self.skip(name, "transform failed")
            return
        with self.check("output", "checking output types") as notes:
            for info, _, out in results:
                want = _kinds(info.capabilities[0])[1]
                if out.type != want:
                    raise Failed(f"model {info.id!r} ({info.capabilities[0].value}) returned {out.type}, not {want}")
                if isinstance(out, BinaryAsset) and not out.data:
                    raise Failed(f"model {info.id!r} returned an empty {out.type}")
                if isinstance(out, Text) and not out.content.strip():
                    notes.append(f"warning: model {info.id!r} returned empty text")
                notes.append(f"{info.id}: {out.type}")
        with self.check("generation-prompt", "checking generation prompts") as notes:
            for info, sample, out in results:
                prompt = out.generation_prompt
                if not isinstance(prompt, dict):
                    raise Failed(f"model {info.id!r} sets no metadata['generation_prompt'] "
                                 "(use self.generation_prompt(input, options, started))")
                if _digest_of(prompt.get("input")) != _digest_of(describe_input(sample)):
                    raise Failed(f"model {info.id!r}: the prompt's 'input' is not the raw input it was given")
                if info.id in strict:
                    notes.append(f"{info.id}: input kept (it refuses undeclared options, so no key to redact)")
                    continue
                if (prompt.get("options") or {}).get(CANARY_OPTION) != REDACTED:
                    raise Failed(f"model {info.id!r}: the prompt's options are not redacted (a key shows as "
                                 f"{(prompt.get('options') or {}).get(CANARY_OPTION)!r})")
                notes.append(f"{info.id}: input kept, options redacted")
        with self.check("secrets", "looking for the canary key") as notes:
            for info, _, out in results:
                places = [json.dumps(out.to_json(), default=str)]
                if isinstance(out, BinaryAsset):
                    places.append(out.data.decode("latin-1"))
                if any(self.canary in p for p in places):
                    raise Failed(f"model {info.id!r}: the key given in the options appears in its output")
            notes.append("the canary key appears nowhere in the outputs")
            if strict:
                notes.append(f"{', '.join(strict)} refused the canary option by name (never reached the model)")

    def _errors(self, provider: MediaProvider, keyless: bool) -> None:
        bogus = "no-such-model-" + secrets.token_hex(3)
        with self.check("errors", "asking for an unknown model") as notes:
            try:
                got = provider.get_model(bogus)
            except (UnknownModelError, InvalidInputError) as exc:  # the latter: an id not even of the API's shape
                if bogus not in str(exc):
                    raise Failed(f"the error for an unknown model does not name it: {exc}") from None
                notes.append(f"clear error: {exc}"[:200])
                return
            except Exception as exc:
                raise Failed(f"an unknown model raised {type(exc).__name__} instead of UnknownModelError: {exc}") from None
            if keyless:
                notes.append(f"without a key the API decides ({type(got).__name__} stands in for {bogus!r})")
                return
            if not (isinstance(provider, RemoteProvider) and provider.accepts_unlisted_models):
                raise Failed(f"get_model({bogus!r}) returned {got!r} instead of raising UnknownModelError")
            # APIs that take unlisted ids (pulled on demand) must refuse an unknown one when it is used.
            cap = got.capability or (provider.capabilities or [MediaCapability.TEXT_TO_TEXT])[0]
            try:
                got.transform(sample_for(cap, None), {})
            except MediaConduitError as exc:
                if bogus not in str(exc):
                    raise Failed(f"running unknown model {bogus!r} failed without naming it: {exc}") from None
                notes.append(f"the API refuses it clearly: {exc}"[:200])
                return
            raise Failed(f"unknown model {bogus!r} was accepted and ran: the API never refused it")


def _manifest_notes(manifest: ProviderManifest) -> list[str]:
    notes = [f"{manifest.id} {manifest.version or ''}".strip()]
    unknown = sorted(manifest.model_extra or {})
    if unknown:
        notes.append(f"warning: unknown keys {', '.join(unknown)} (kept, not read)")
    for entry in manifest.models:
        extra = sorted(entry.model_extra or {})
        if extra:
            notes.append(f"warning: model {entry.id!r} has unknown keys {', '.join(extra)}")
    if manifest.other_capabilities:
        notes.append(f"warning: not capabilities (ignored): {', '.join(manifest.other_capabilities)}")
    if not manifest.capabilities:
        raise Failed("field 'capabilities': lists no known capability")
    for entry in manifest.models:
        foreign = [c.value for c in entry.capabilities if c not in manifest.capabilities]
        if foreign:
            raise Failed(f"model {entry.id!r} has capability {', '.join(foreign)} that the provider's 'capabilities' "
                         f"({', '.join(c.value for c in manifest.capabilities)}) does not list")
    served = {c for e in manifest.models for c in e.capabilities}
    idle = [c.value for c in manifest.capabilities if manifest.models and c not in served
            and all(e.capabilities for e in manifest.models)]
    if idle:
        notes.append(f"warning: no model serves {', '.join(idle)}")
    return notes


def _kind_of(provider: MediaProvider) -> str:
    if isinstance(provider, DockerProvider):
        return "Docker"
    return "remote" if isinstance(provider, RemoteProvider) else "local"


def _digest_of(value: Any) -> Any:
    """Compare inputs by content: text as is, media by sha256."""
    if isinstance(value, dict):
        return value.get("sha256") or value.get("content")
    return value


def _summary(out: Asset) -> str:
    if isinstance(out, Text):
        text = out.content.replace("\n", " ")
        return repr(text[:40] + ("…" if len(text) > 40 else ""))
    if isinstance(out, BinaryAsset):
        return f"{out.mime_type}, {len(out.data)} bytes"
    return out.type


# -- the command ------------------------------------------------------------------------------------
STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}


@click.command("validate")
@click.argument("url")
@click.option("--model", default=None, help="Run only this model (default: every model).")
@click.option("--input", "given_input", default=None, help="Sample input: text, or a media file for audio/image models.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def providers_validate(url: str, model: str | None, given_input: str | None, as_json: bool) -> None:
    """Load a provider as a worker would (fresh cache) and check it.

    Exit code 0 when every check passed (or warned); 1 when one failed, or was skipped because it could not
    run here (a remote provider with no API key: the skipped checks' detail names the variable to set).
    """
    from rich.console import Console
    from rich.table import Table

    err = Console(stderr=True)
    with err.status(f"validating {url}") as status:
        report = Validator(url, model, given_input, progress=lambda msg: status.update(f"{url}: {msg}")).run()
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        table = Table("check", "result", "seconds", "detail", title=f"{report.provider or url}")
        for c in report.checks:
            table.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", f"{c.seconds:.2f}", c.detail)
        table_console().print(table)
        failed = [c.name for c in report.checks if c.status == "fail"]
        if failed:
            Console().print(f"[red]failed: {', '.join(failed)}[/]")
        elif not report.skipped:
            Console().print("[green]all checks passed[/]")
    if report.ok and report.skipped:
        passed = sum(c.status in ("pass", "warn") for c in report.checks)
        raise CommandError(f"not validated: {passed} of {len(report.checks)} checks passed, "
                           f"{len(report.skipped)} skipped ({', '.join(report.skipped)}); their detail says why")
    if not report.ok:
        raise SystemExit(1)
