"""A real gateway process (``mediaconduit gateway`` on uvicorn), real workers and the suite's Redis, and
clients that know the API only from the gateway's own ``/openapi.json``, with plain ``httpx``."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RUN_DIR, free_port, publish

SLOW_PROVIDER = '''
import time
PRICE = 0.25
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text


class Sleep(TextToTextModel):
    def transform(self, input, options=None):
        time.sleep(float((options or {}).get("seconds", 1)))
        return Text.from_string("slept: " + input_text(input))


class SlowProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: Sleep, MediaCapability.VIDEO_TO_AUDIO: Sleep}

    def discover_models(self):
        models = super().discover_models()
        for m in models:
            if m.id == "priced":
                m.pricing = {"request": PRICE}
        return models
'''
STANDIN_CHAT = '''
from mediaconduit_worker import OpenAICompatProvider


class StandInChat(OpenAICompatProvider):
    """OpenAI-compatible, its base URL and key the test's stand-in."""

    lists_models = False

    def __init__(self):
        super().__init__()
        self.configure({{"api_key": {key!r}, "base_url": {base!r}}})
'''
STANDIN_CHAT_MANIFEST = ("id: {id}\nname: Stand-in chat\ntype: remote\nmain: provider.py\nexportName: StandInChat\n"
                         "models:\n  - {{id: gpt-4o-mini, capabilities: [text-to-text]}}\n")


def publish_standin_chat(tmp_path_factory: pytest.TempPathFactory, name: str, base: str) -> str:
    """An OpenAI-compatible provider (model ``gpt-4o-mini``) whose base URL and the stand-in's OpenAI key are in
    its code, so the suite's shared text-to-text worker (which has no stand-in environment) serves it."""
    from support.standin_apis import KEYS

    folder = tmp_path_factory.mktemp(name)
    (folder / "provider.py").write_text(STANDIN_CHAT.format(key=KEYS["openai"], base=base))
    (folder / "MediaConduit.provider.yml").write_text(STANDIN_CHAT_MANIFEST.format(id=name))
    return publish(folder, f"{name}-{uuid.uuid4().hex[:6]}", org="tests")


#: USD per call of the slow provider's ``priced`` model.
PRICE = 0.25
#: A capability no worker of the suite serves: jobs of the ``parked`` model stay queued.
PARKED_CAPABILITY = "video-to-audio"
#: The upload cap of the test gateway (small, so the cap is tested without big files).
MAX_UPLOAD = 2 * 1024 * 1024
MAX_BODY = 1024 * 1024
AUTH_FAILURES = 5


@pytest.fixture(scope="session")
def slow_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A provider with a ``sleep`` model (text-to-text), a ``parked`` one (a capability nobody serves) and a
    ``priced`` one (``sleep`` at ``PRICE`` USD a call)."""
    folder = tmp_path_factory.mktemp("slow-provider")
    (folder / "provider.py").write_text(SLOW_PROVIDER)
    (folder / "MediaConduit.provider.yml").write_text(
        "id: slow-provider\nname: Slow\ntype: local\nmain: provider.py\nexportName: SlowProvider\nmodels:\n"
        "  - {id: sleep, capabilities: [text-to-text], parameters: {seconds: {type: number}}}\n"
        f"  - {{id: parked, capabilities: [{PARKED_CAPABILITY}]}}\n"
        "  - {id: priced, capabilities: [text-to-text], parameters: {seconds: {type: number}}}\n")
    return publish(folder, "slow-provider", org="tests")


class GatewayProcess:
    """``mediaconduit gateway`` in its own process group, its log kept for failure messages."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = RUN_DIR / f"gateway-{uuid.uuid4().hex[:6]}.log"
        environ = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "mediaconduit_worker.cli", "gateway", "--port", str(self.port)],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=environ,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> GatewayProcess:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/openapi.json", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the gateway did not answer within {timeout:g}s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        from mediaconduit_worker.cli.worker import stop_process

        stop_process(self.proc)


GATEWAY_ENV = {
    "MEDIACONDUIT_PROVIDER_ALLOW": "https://github.com/MediaConduit/,https://github.com/tests/",
    "MEDIACONDUIT_GATEWAY_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
    "MEDIACONDUIT_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
    "MEDIACONDUIT_GATEWAY_AUTH_FAILURES": str(AUTH_FAILURES),
    # webhooks are sent by test_webhooks.py's own gateways, which it stops and kills
    "MEDIACONDUIT_GATEWAY_WEBHOOKS": "false",
    "MEDIACONDUIT_WEBHOOK_ALLOW": "https://hooks.example/",
}


@pytest.fixture(scope="session")
def gateway() -> Iterator[GatewayProcess]:
    proc = GatewayProcess(GATEWAY_ENV).wait_ready()
    yield proc
    proc.stop()


class API:
    """A client written from the OpenAPI document: ``api.call("createJob", json=...)`` finds the operation's
    method and path there; nothing else about the API is known to it."""

    def __init__(self, base: str, key: str | None, document: dict[str, Any], **client: Any) -> None:
        self.base, self.key, self.document = base, key, document
        self.http = httpx.Client(base_url=base, timeout=90, **client)
        self.operations = {op["operationId"]: (method.upper(), path)
                           for path, item in document["paths"].items() for method, op in item.items()}

    def call(self, operation: str, path: dict[str, str] | None = None, headers: dict[str, str] | None = None,
             **request: Any) -> httpx.Response:
        method, template = self.operations[operation]
        url = template.format(**(path or {}))
        auth = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return self.http.request(method, url, headers={**auth, **(headers or {})}, **request)

    def as_key(self, key: str | None, **client: Any) -> API:
        return API(self.base, key, self.document, **client)


def create_key(tenant: str, *args: str, env: dict[str, str] | None = None) -> str:
    """``mediaconduit keys create --tenant TENANT --json``: the key."""
    out = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "keys", "create", "--tenant", tenant, *args,
                          "--json"], capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["key"]


@pytest.fixture(scope="session")
def openapi(gateway: GatewayProcess) -> dict[str, Any]:
    return httpx.get(gateway.url + "/openapi.json").json()


@pytest.fixture(scope="session")
def alice(gateway: GatewayProcess, openapi: dict[str, Any]) -> Iterator[API]:
    api = API(gateway.url, create_key(f"alice-{uuid.uuid4().hex[:6]}"), openapi)
    yield api
    api.http.close()


@pytest.fixture(scope="session")
def bob(gateway: GatewayProcess, openapi: dict[str, Any]) -> Iterator[API]:
    api = API(gateway.url, create_key(f"bob-{uuid.uuid4().hex[:6]}"), openapi)
    yield api
    api.http.close()


def wait_finished(api: API, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job once its status is final (read with ``Prefer: wait``, as a client would)."""
    end = time.monotonic() + timeout
    while True:
        job = api.call("getJob", {"job_id": job_id}, headers={"Prefer": "wait=10"}).json()
        if job["status"] in ("succeeded", "failed", "canceled", "expired") or time.monotonic() > end:
            return job


def repo_path(*parts: str) -> Path:
    return Path(__file__).resolve().parents[2].joinpath(*parts)


@contextlib.contextmanager
def default_routes_file(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``spec`` written as the routes file at its default path (where the gateway and workers read it) for the
    block's time; one test module at a time may hold it."""
    import yaml

    from mediaconduit_worker.settings import get_settings

    path = get_settings().routes_file
    assert not path.exists(), f"{path} exists: another test left a routes file at the default path"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    try:
        yield spec
    finally:
        path.unlink()
