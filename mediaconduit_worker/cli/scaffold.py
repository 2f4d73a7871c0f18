"""``mediaconduit providers new NAME``: a provider repository (and service) that validates and runs as written.

The generated models do real, dependency-free work for their capability (stdlib only: ``wave`` for
audio, a zlib-built PNG for images), so ``providers validate`` and a worker run them unchanged; the
author replaces the bodies of ``ops.py`` with the real thing.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..capabilities import MediaCapability, capability

#: Capability → (SDK model base class, input asset kind, output asset class).
SUPPORTED: dict[MediaCapability, tuple[str, str, str]] = {
    MediaCapability.TEXT_TO_TEXT: ("TextToTextModel", "text", "Text"),
    MediaCapability.TEXT_TO_IMAGE: ("TextToImageModel", "text", "Image"),
    MediaCapability.TEXT_TO_AUDIO: ("TextToAudioModel", "text", "Audio"),
    MediaCapability.IMAGE_TO_TEXT: ("ImageToTextModel", "image", "Text"),
    MediaCapability.AUDIO_TO_TEXT: ("AudioToTextModel", "audio", "Text"),
    MediaCapability.IMAGE_TO_IMAGE: ("ImageToImageModel", "image", "Image"),
    MediaCapability.AUDIO_TO_AUDIO: ("AudioToAudioModel", "audio", "Audio"),
}
MIME = {"Text": "text/plain", "Image": "image/png", "Audio": "audio/wav"}
SERVICE_PORT = 8000

OPS = '''"""The work each capability does: replace these bodies with the real thing (stdlib only for now)."""

from __future__ import annotations

import io
import struct
import wave
import zlib


def png(width: int, height: int, pixels: bytes) -> bytes:
    """A PNG from RGB rows (``pixels`` is width*height*3 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\\x00" + pixels[y * width * 3:(y + 1) * width * 3] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != b"\\x89PNG\\r\\n\\x1a\\n":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", data[16:24])


def wav(frames: bytes, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def read_wav(data: bytes) -> tuple[bytes, int, int, int]:
    """(frames, channels, sample width, rate) of a WAV file."""
    with wave.open(io.BytesIO(data), "rb") as w:
        return w.readframes(w.getnframes()), w.getnchannels(), w.getsampwidth(), w.getframerate()


def text_to_text(text: str) -> str:
    return text.upper()


def text_to_image(text: str) -> bytes:
    """One 8x8 square per byte of the text, its colour taken from the byte."""
    data = text.encode()[:64] or b" "
    width = 8 * len(data)
    row = b"".join(bytes((b, 255 - b, (b * 7) % 256)) * 8 for b in data)
    return png(width, 8, row * 8)


def text_to_audio(text: str) -> bytes:
    """A 20 ms square-wave tone per character, its pitch taken from the character."""
    frames = bytearray()
    for ch in text[:200] or " ":
        period = 8 + ord(ch) % 32
        frames += b"".join(struct.pack("<h", 8000 if (i // period) % 2 else -8000) for i in range(320))
    return wav(bytes(frames))


def image_to_text(data: bytes) -> str:
    width, height = png_size(data)
    return f"PNG image {width}x{height}"


def audio_to_text(data: bytes) -> str:
    frames, channels, width, rate = read_wav(data)
    return f"{len(frames) / (channels * width * rate):.2f} seconds of audio"


def image_to_image(data: bytes) -> bytes:
    """The image's negative."""
    width, height = png_size(data)
    return png(width, height, bytes(255 - b for b in _rgb(data, width, height)))


def _rgb(data: bytes, width: int, height: int) -> bytes:
    """RGB rows of an 8-bit RGB PNG, its row filters undone."""
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == b"IHDR" and data[pos + 16:pos + 18] != b"\\x08\\x02":
            raise ValueError("only 8-bit RGB PNGs are supported here")
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw, stride, out, prev = zlib.decompress(idat), width * 3, bytearray(), bytearray(width * 3)
    for y in range(height):
        kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a, b, c = row[x - 3] if x >= 3 else 0, prev[x], prev[x - 3] if x >= 3 else 0
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            paeth = a if pa <= pb and pa <= pc else b if pb <= pc else c
            row[x] = (row[x] + (0, a, b, (a + b) // 2, paeth)[kind]) & 0xFF
        out += row
        prev = row
    return bytes(out)


def audio_to_audio(data: bytes) -> bytes:
    """The audio reversed (mono 16-bit)."""
    frames, channels, width, rate = read_wav(data)
    if channels != 1 or width != 2:
        raise ValueError("only mono 16-bit WAV is supported here")
    samples = [frames[i:i + 2] for i in range(0, len(frames), 2)]
    return wav(b"".join(reversed(samples)), rate)
'''


def _names(name: str) -> tuple[str, str, str]:
    """(slug, Python package, class prefix) of a provider name such as ``acme`` or ``Acme Speech``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-").removesuffix("-provider")
    if not slug or not slug[0].isalpha():
        raise click.BadParameter(f"{name!r}: a provider name starts with a letter (letters, digits, dashes)",
                                 param_hint="NAME")
    return slug, slug.replace("-", "_") + "_provider", "".join(p.capitalize() for p in slug.split("-"))


def _func(cap: MediaCapability) -> str:
    return cap.value.replace("-", "_")


def _model_id(slug: str, cap: MediaCapability) -> str:
    return f"{slug}-{cap.value}"


def manifest(slug: str, caps: list[MediaCapability], package: str, cls: str, docker: bool, remote: bool,
             service_url: str) -> str:
    lines = [f"id: {slug}-provider", f"name: {cls} Provider",
             f"description: {cls} provider ({', '.join(c.value for c in caps)})", "version: 0.1.0",
             "author: YOUR NAME", f"type: {'remote' if remote else 'local'}", "capabilities:"]
    lines += [f"  - {c.value}" for c in caps]
    if docker:
        lines.append(f"serviceUrl: {service_url}")
    lines.append("models:")
    for c in caps:
        _, kind, out = SUPPORTED[c]
        lines += [f"  - id: {_model_id(slug, c)}", f"    name: {cls} {c.value}", f"    capabilities: [{c.value}]",
                  f"    inputTypes: [{kind}]", f"    outputTypes: [{out.lower()}]"]
    lines += [f"main: src/{package}/__init__.py", f"exportName: {cls}Provider"]
    return "\n".join(lines) + "\n"


def _local_module(caps: list[MediaCapability], cls: str, docker: bool) -> str:
    bases = sorted({SUPPORTED[c][0] for c in caps})
    outs = sorted({SUPPORTED[c][2] for c in caps} | ({"Image"} if any(SUPPORTED[c][1] == "image" for c in caps) else set())
                  | ({"Audio"} if any(SUPPORTED[c][1] == "audio" for c in caps) else set()))
    provider_base = "DockerProvider" if docker else "MediaProvider"
    readers = {"input_text" if SUPPORTED[c][1] == "text" else "input_asset" for c in caps}
    imports = sorted({provider_base, "MediaCapability", *readers, *bases, *outs},
                     key=lambda s: (s[0].islower(), s))
    body = [f'"""{cls} provider: one model per capability; {"the work is done by its Docker service" if docker else "the work is in ops.py"}."""',
            "", "from __future__ import annotations", "", "import time", "from typing import Any", "",
            "from mediaconduit_worker import (", *(f"    {i}," for i in imports), ")", ""]
    if not docker:
        body += ["from . import ops", ""]
    for c in caps:
        base, kind, out = SUPPORTED[c]
        name = cls + "".join(p.capitalize() for p in c.value.split("-"))
        read = "input_text(input)" if kind == "text" else f"input_asset(input, {kind.capitalize()}).data"
        if docker:
            mime = "text/plain; charset=utf-8" if kind == "text" else ("image/png" if kind == "image" else "audio/wav")
            payload = "data.encode()" if kind == "text" else "data"
            call = [f"        body, _ = self.provider.client().request_bytes(\"POST\", \"/run/{c.value}\", content={payload},",
                    f"                                                      headers={{\"Content-Type\": \"{mime}\"}})"]
            result = "body.decode()" if out == "Text" else "body"
            meta = ", service=self.provider.service_metadata()"
        else:
            call = [f"        body = ops.{_func(c)}(data)"]
            result = "body"
            meta = ""
        make = (f"Text.from_string({result}, metadata={{\"generation_prompt\": prompt}})" if out == "Text"
                else f"{out}(data={result}, mime_type=\"{MIME[out]}\", metadata={{\"generation_prompt\": prompt}})")
        body += ["", f"class {name}Model({base}):",
                 f"    def transform(self, input: Any, options: dict[str, Any] | None = None) -> {out}:",
                 "        started = time.perf_counter()", "        opts = dict(options or {})",
                 f"        data = {read}", *call,
                 f"        prompt = self.generation_prompt(input, opts, started{meta})",
                 f"        return {make}", ""]
    mapping = "".join(f"\n        MediaCapability.{c.name}: {cls}{''.join(p.capitalize() for p in c.value.split('-'))}Model,"
                      for c in caps)
    body += ["", f"class {cls}Provider({provider_base}):", f"    model_classes = {{{mapping}\n    }}"]
    return "\n".join(body) + "\n"


def _remote_module(slug: str, cls: str) -> str:
    env = slug.upper().replace("-", "_")
    return f'''"""{cls} provider: an HTTP API with a key ({env}_API_KEY), OpenAI-style chat completions."""

from __future__ import annotations

import time
from typing import Any

from mediaconduit_worker import (
    MediaCapability,
    ProviderResponseError,
    RemoteProvider,
    Text,
    TextToTextModel,
    input_text,
)


class ChatModel(TextToTextModel):
    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Text:
        started = time.perf_counter()
        opts = dict(options or {{}})
        self.provider.ensure_configured()  # no key: a clear error naming {env}_API_KEY
        body = {{"model": self.id, "messages": [{{"role": "user", "content": input_text(input)}}]}}
        reply = self.provider.http.post_json("/chat/completions", body)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ProviderResponseError(f"{{self.provider.label}}: no choices[0].message.content in the reply") from None
        prompt = self.generation_prompt(input, opts, started)
        return Text.from_string(str(content), metadata={{"generation_prompt": prompt}})


class {cls}Provider(RemoteProvider):
    config_env = {{"api_key": "{env}_API_KEY", "base_url": "{env}_BASE_URL"}}
    default_base_url = "https://api.example.com/v1"  # the API's address; {env}_BASE_URL overrides it
    model_classes = {{MediaCapability.TEXT_TO_TEXT: ChatModel}}
'''


def _tests(package: str, cls: str, caps: list[MediaCapability], docker: bool, remote: bool, slug: str) -> str:
    env = slug.upper().replace("-", "_")
    skip = ""
    if docker:
        skip = (f'\nSERVICE = os.environ.get("{env}_SERVICE_URL")  # e.g. http://127.0.0.1:PORT of `docker compose up`\n'
                f'pytestmark = pytest.mark.skipif(not SERVICE, reason="set {env}_SERVICE_URL to a running {slug}-service")\n')
    if remote:
        skip = (f'\npytestmark = pytest.mark.skipif(not os.environ.get("{env}_API_KEY"),\n'
                f'                                reason="set {env}_API_KEY (and {env}_BASE_URL) to call the API")\n')
    host = ""
    if docker:
        host = '''

class RunningService:
    """Hands the provider the service already running at SERVICE (what a worker's ServiceHost does)."""

    def ensure(self, url, origin=None):
        port = int(SERVICE.rsplit(":", 1)[1].split("/")[0])
        return ServiceInfo(service_id="service", url=url, key="test", container_id="local", container_name="local",
                           ports=[port], container_ports=[port], base_url=SERVICE, commit="local", image="local")
'''
    samples = {
        "text": '"Hello from the tests"',
        "image": 'Image(data=ops.text_to_image("hi"), mime_type="image/png")',
        "audio": 'Audio(data=ops.text_to_audio("hi"), mime_type="audio/wav")',
    }
    cases = ",\n".join(f'    ("{_model_id(slug, c)}", {samples[SUPPORTED[c][1]]}, '
                       f'"{SUPPORTED[c][2].lower()}")' for c in caps)
    kinds = {SUPPORTED[c][1] for c in caps}
    sdk = sorted({"Audio"} & {k.capitalize() for k in kinds} | {"Image"} & {k.capitalize() for k in kinds}
                 | ({"ServiceInfo"} if docker else set()))
    imports = (["import os"] if docker or remote else []) + ["from pathlib import Path", "", "import pytest"]
    imports += [f"from mediaconduit_worker import {', '.join(sdk)}"] if sdk else []
    imports += ["from mediaconduit_worker.manifest import load_provider_manifest"]
    local = [f"from {package} import {cls}Provider"]
    if kinds - {"text"}:
        local.insert(0, "import samples as ops  # the service's ops.py" if docker else f"from {package} import ops")
    load = "\n".join(["", *sorted(local, key=lambda line: line.startswith("from"))])
    return f'''"""The models through the SDK, without a worker: what a worker would call, on a sample of each capability."""

{chr(10).join(imports)}
{load}

ROOT = Path(__file__).resolve().parents[1]
{skip}{host}

@pytest.fixture(scope="module")
def provider():
    p = {cls}Provider()
    p.attach_manifest(load_provider_manifest(ROOT)){(chr(10) + "    p.service_host = RunningService()") if docker else ""}
    return p


@pytest.mark.parametrize("model_id, sample, output_type", [
{cases},
])
def test_model_runs_on_a_sample(provider, model_id, sample, output_type):
    out = provider.get_model(model_id).transform(sample, {{}})
    assert out.type == output_type
    assert out.generation_prompt["model_id"] == model_id
'''


def service_files(slug: str, cls: str, caps: list[MediaCapability]) -> dict[str, str]:
    env = slug.upper().replace("-", "_")
    routes = ", ".join(f'"/run/{c.value}": ("{SUPPORTED[c][1]}", ops.{_func(c)})' for c in caps)
    return {
        "MediaConduit.service.yml": (
            f"id: {slug}-service\nname: {cls} Service\ndescription: HTTP service behind {slug}-provider\nversion: 0.1.0\n"
            f"capabilities:\n" + "".join(f"  - {c.value}\n" for c in caps) +
            f"docker:\n  composeFile: docker-compose.yml\n  serviceName: {slug}\n  image: {slug}-service\n"
            "  ports:\n    - 0  # Docker picks the host port\n"
            "  healthCheck:\n    url: http://localhost:__PORT__/health  # __PORT__: the real host port\n"
            "    startupTimeout: 60\n"),
        "docker-compose.yml": (
            f"services:\n  {slug}:\n    build: .\n    ports:\n      - \"${{{env}_HOST_PORT:-0}}:{SERVICE_PORT}\"\n"
            f"    environment:\n      - PORT={SERVICE_PORT}\n    healthcheck:\n"
            f"      test: [\"CMD\", \"python3\", \"-c\", \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{SERVICE_PORT}/health', timeout=5)\"]\n"
            "      interval: 30s\n      timeout: 10s\n      retries: 3\n"),
        "Dockerfile": (
            "# Offline builds pass BASE_IMAGE=mediaconduit/base:bookworm (the worker does).\n"
            "ARG BASE_IMAGE=python:3.12-slim\nFROM ${BASE_IMAGE}\nCOPY server.py ops.py /app/\n"
            f"ENV PORT={SERVICE_PORT} PYTHONUNBUFFERED=1\nEXPOSE {SERVICE_PORT}\nCMD [\"python3\", \"/app/server.py\"]\n"),
        "ops.py": OPS,
        "server.py": f'''"""{cls} service: ``GET /health``; ``POST /run/<capability>`` with the input as the body (text or media)."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ops

ROUTES = {{{routes}}}
MIME = {{str: "text/plain; charset=utf-8", bytes: "application/octet-stream"}}


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body, mime):
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self._send(200, b'{{"status": "ok"}}', "application/json")
        else:
            self._send(404, b'{{"error": "no such route"}}', "application/json")

    def do_POST(self):
        route = ROUTES.get(self.path)
        if route is None:
            return self._send(404, b'{{"error": "no such route"}}', "application/json")
        kind, run = route
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            out = run(data.decode() if kind == "text" else data)
        except ValueError as exc:
            return self._send(400, json.dumps({{"error": str(exc)}}).encode(), "application/json")
        self._send(200, out.encode() if isinstance(out, str) else out, MIME[type(out)])


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "{SERVICE_PORT}"))), Handler).serve_forever()
''',
        "README.md": (f"# {slug}-service\n\nThe HTTP service behind `{slug}-provider`, started by the worker on a "
                      "Docker-assigned port.\n\n- `GET /health`\n" +
                      "".join(f"- `POST /run/{c.value}`: the input as the body\n" for c in caps) +
                      f"\nBy hand: `{env}_HOST_PORT=8000 docker compose up --build`.\n"),
    }


def provider_files(slug: str, package: str, cls: str, caps: list[MediaCapability], docker: bool, remote: bool,
                   service_url: str) -> dict[str, str]:
    env = slug.upper().replace("-", "_")
    files = {
        "MediaConduit.provider.yml": manifest(slug, caps, package, cls, docker, remote, service_url),
        f"src/{package}/__init__.py": _remote_module(slug, cls) if remote else _local_module(caps, cls, docker),
        "tests/test_models.py": _tests(package, cls, caps, docker, remote, slug),
        "tests/conftest.py": '"""Makes the provider package (and the samples) importable."""\n\nimport sys\nfrom pathlib '
                             'import Path\n\nHERE = Path(__file__).resolve().parent\nsys.path[:0] = [str(HERE.parent / "src"), str(HERE)]\n',
    }
    if not docker and not remote:
        files[f"src/{package}/ops.py"] = OPS
    if docker:
        files["tests/samples.py"] = OPS
    how = ("Its work is done by the Docker service at `serviceUrl` (scaffolded as `../"
           f"{slug}-service`): push that repository and set `serviceUrl` to where it lives." if docker else
           f"It calls an HTTP API with the key in `{env}_API_KEY` (and `{env}_BASE_URL`); set them in the worker's "
           "environment." if remote else "Its work is in `src/" + package + "/ops.py`.")
    models = "".join(f"| `{_model_id(slug, c)}` | {c.value} |\n" for c in caps)
    files["README.md"] = (
        f"# {slug}-provider\n\nA MediaConduit provider. {how}\n\n| model | capability |\n|---|---|\n{models}\n"
        "## Check it\n\n```sh\n"
        f"mediaconduit providers validate ./{slug}-provider   # what a worker does, checked by name\n"
        "python -m pytest tests                        # the models through the SDK, without a worker\n```\n\n"
        "## Use it\n\n```python\nfrom mediaconduit_worker import transform\n"
        f"transform.delay(\"hello\", \"https://github.com/YOUR-ORG/{slug}-provider\", \"{_model_id(slug, caps[0])}\", {{}}).get()\n```\n")
    return files


def scaffold(name: str, caps: list[str], docker: bool, remote: bool, where: Path, service_url: str | None,
             api_model: str | None = None) -> list[Path]:
    """Write ``NAME-provider`` (and ``NAME-service`` with ``docker``) under ``where``; the folders made."""
    if docker and remote:
        raise click.UsageError("--docker and --remote exclude each other: a provider runs a service or calls an API")
    slug, package, cls = _names(name)
    try:
        wanted = [capability(c) for c in caps] or [MediaCapability.TEXT_TO_TEXT]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--capability") from None
    wanted = list(dict.fromkeys(wanted))
    unsupported = [c.value for c in wanted if c not in SUPPORTED]
    if unsupported:
        raise click.BadParameter(f"no template for {', '.join(unsupported)}; templates exist for "
                                 f"{', '.join(c.value for c in SUPPORTED)}", param_hint="--capability")
    if remote and wanted != [MediaCapability.TEXT_TO_TEXT]:
        raise click.BadParameter("the --remote template is a text-to-text chat API", param_hint="--capability")
    trees = {where / f"{slug}-provider": provider_files(slug, package, cls, wanted, docker, remote,
                                                        service_url or f"https://github.com/YOUR-ORG/{slug}-service")}
    if docker:
        trees[where / f"{slug}-service"] = service_files(slug, cls, wanted)
    if remote and api_model:  # the API's own id for its model, wherever the template names the model
        default = _model_id(slug, MediaCapability.TEXT_TO_TEXT)
        trees = {f: {rel: text.replace(default, api_model) for rel, text in files.items()} for f, files in trees.items()}
    for folder in trees:
        if folder.exists():
            raise click.ClickException(f"{folder} already exists; choose another name or move it away")
    for folder, files in trees.items():
        for rel, text in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
    return list(trees)


@click.command("new")
@click.argument("name")
@click.option("--capability", "caps", multiple=True, help="A capability to serve (repeatable); default text-to-text.")
@click.option("--docker", is_flag=True, help="Back the models with a Docker service, scaffolded as ./NAME-service.")
@click.option("--remote", is_flag=True, help="A RemoteProvider calling an HTTP API with a key.")
@click.option("--api-model", default=None, help="With --remote: the API's id of the model to list.")
@click.option("--service-url", default=None, help="Where NAME-service will be published (the manifest's serviceUrl).")
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              help="Folder to create the repositories in (default: here).")
def providers_new(name: str, caps: tuple[str, ...], docker: bool, remote: bool, api_model: str | None,
                  service_url: str | None, where: Path) -> None:
    """Scaffold a provider repository ./NAME-provider (and ./NAME-service with --docker)."""
    for folder in scaffold(name, list(caps), docker, remote, where, service_url, api_model):
        click.echo(f"created {folder}")
    click.echo(f"next: mediaconduit providers validate {(where / (_names(name)[0] + '-provider')).resolve()}")
