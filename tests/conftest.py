"""Real parts for every test: a Redis started here, worker processes, git repos served by URL.

Environment is set on import, before anything reads settings, so the test process and the workers it
starts share one Redis URL, one MEDIACONDUIT_HOME and one git ``insteadOf`` mirror of github.com. The
Redis itself starts lazily, before the first test outside ``WITHOUT_REDIS`` (the SDK needs none, and its
tests pass on a machine without a Redis server: ``tests/test_without_redis.py`` runs them so).

``MEDIACONDUIT_TEST_BROKER_URL`` runs the tests on a Redis of your own instead.
``MEDIACONDUIT_TESTS_NO_REDIS=1`` forbids starting one: a test that asks for the broker fails, and
``MEDIACONDUIT_BROKER_URL`` is left as the caller set it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = Path(tempfile.mkdtemp(prefix="mediaconduit-tests-"))
MIRRORS = RUN_DIR / "mirrors"
GITHUB = "https://github.com/"
NO_REDIS = os.environ.get("MEDIACONDUIT_TESTS_NO_REDIS") == "1"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reserve_port() -> socket.socket:
    """A loopback port held for the embedded Redis until it starts: bound with ``SO_REUSEADDR`` and never
    listening, so Redis (which sets ``SO_REUSEADDR`` too) can bind it, and nobody else (another run's
    ``free_port``, on a shared machine) is handed it meanwhile."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    return held


def _setup_environment() -> socket.socket | None:
    """Git, MEDIACONDUIT_HOME and the broker URL for this process and the workers it starts; the port of
    the embedded Redis held (returned) until ``redis_server`` starts it."""
    MIRRORS.mkdir(parents=True)
    gitconfig = RUN_DIR / "gitconfig"
    gitconfig.write_text(
        f'[url "file://{MIRRORS}/"]\n\tinsteadOf = {GITHUB}\n'
        "[user]\n\tname = MediaConduit Tests\n\temail = tests@mediaconduit.invalid\n"
        "[init]\n\tdefaultBranch = main\n[protocol \"file\"]\n\tallow = always\n"
    )
    os.environ["GIT_CONFIG_GLOBAL"] = str(gitconfig)
    os.environ["MEDIACONDUIT_HOME"] = str(RUN_DIR / "home")
    os.environ.pop("MEDIACONDUIT_PROVIDER_ALLOW", None)
    if NO_REDIS:
        return None
    if "MEDIACONDUIT_TEST_BROKER_URL" in os.environ:
        os.environ["MEDIACONDUIT_BROKER_URL"] = os.environ["MEDIACONDUIT_TEST_BROKER_URL"]
        return None
    held = _reserve_port()
    os.environ["MEDIACONDUIT_BROKER_URL"] = f"redis://127.0.0.1:{held.getsockname()[1]}/0"
    os.environ.pop("MEDIACONDUIT_RESULT_BACKEND", None)
    return held


_HELD_PORT = _setup_environment()
_REDIS: Any = None  # the EmbeddedRedis, once redis_server started it


def pytest_unconfigure(config: pytest.Config) -> None:
    try:
        _remove_our_containers()  # a safety net: the docker_engine fixture already did it
    except Exception:
        pass
    if _REDIS is not None:
        _REDIS.stop()
    if _HELD_PORT is not None:
        _HELD_PORT.close()
    shutil.rmtree(RUN_DIR, ignore_errors=True)


#: Tests that run without a broker: the SDK's (the SDK never imports the runtime), and those that prove it.
WITHOUT_REDIS = (REPO / "tests" / "sdk", REPO / "tests" / "test_without_redis.py")


def start_redis() -> Any:
    """The embedded Redis, started on first use at the URL set on import (None when
    MEDIACONDUIT_TEST_BROKER_URL points elsewhere)."""
    global _REDIS
    if NO_REDIS:
        pytest.fail("this test needs Redis, and MEDIACONDUIT_TESTS_NO_REDIS=1 forbids starting one", pytrace=False)
    if _HELD_PORT is None or _REDIS is not None:
        return _REDIS
    from mediaconduit_worker.worker.broker import EmbeddedRedis

    redis = EmbeddedRedis(RUN_DIR / "home", _HELD_PORT.getsockname()[1])
    if redis.ping():  # impossible while the port is held, unless a Redis ignores that: not ours to use
        pytest.fail(f"a Redis this run did not start answers on port {redis.port}", pytrace=False)
    redis.ensure_started()
    _REDIS = redis
    return redis


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Redis is up before any fixture of a test outside ``WITHOUT_REDIS`` (workers, limits, cache,
    batches and status all meet there)."""
    if not any(item.path.is_relative_to(p) for p in WITHOUT_REDIS):
        start_redis()


@pytest.fixture(scope="session")
def redis_server() -> Any:
    """The embedded Redis these tests run on (None when MEDIACONDUIT_TEST_BROKER_URL points elsewhere)."""
    return start_redis()


# -- git repositories served by URL --------------------------------------------------------------
def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def publish(folder: Path, name: str, org: str = "MediaConduit") -> str:
    """Commit ``folder`` into a bare repo behind ``https://github.com/<org>/<name>``; return that URL.

    Publishing changed content adds a commit on top, like a push; the same content again is a no-op.
    """
    bare = MIRRORS / org / name
    work = RUN_DIR / "work" / org / name
    if not bare.exists():
        bare.parent.mkdir(parents=True, exist_ok=True)
        git("init", "--bare", "-q", str(bare), cwd=RUN_DIR)
        work.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "-q", str(bare), str(work), cwd=RUN_DIR)
    for item in work.iterdir():
        if item.name != ".git":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    shutil.copytree(folder, work, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    git("add", "-A", cwd=work)
    if git("status", "--porcelain", cwd=work) or not (bare / "refs" / "heads" / "main").exists():
        git("commit", "-q", "--allow-empty", "-m", f"publish {name}", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
    return f"{GITHUB}{org}/{name}"


def head_commit(name: str, org: str = "MediaConduit") -> str:
    return git("rev-parse", "main", cwd=MIRRORS / org / name)


@pytest.fixture(scope="session")
def echo_url() -> str:
    """The reference echo provider, published as github.com/MediaConduit/echo-provider."""
    return publish(REPO / "providers" / "echo-provider", "echo-provider")


@pytest.fixture
def make_provider(tmp_path: Path) -> Callable[..., str]:
    """Publish a throw-away provider repo from a manifest (dict or text) and files; returns its URL."""
    import yaml

    def make(name: str, manifest: dict | str, files: dict[str, str] | None = None) -> str:
        folder = tmp_path / name
        folder.mkdir()
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        (folder / "MediaConduit.provider.yml").write_text(text)
        for rel, content in (files or {}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(content)
        return publish(folder, f"{name}-{uuid.uuid4().hex[:6]}", org="tests")

    return make


@pytest.fixture(scope="module")
def apis() -> Iterator[Any]:
    """The stand-in HTTP APIs of the remote providers (tests/support/standin_apis.py), one server per module."""
    from support.standin_apis import StandInAPIs

    server = StandInAPIs().start()
    yield server
    server.stop()


# -- worker processes ------------------------------------------------------------------------------
class WorkerProcess:
    """A worker in its own process group, with its log kept for failure messages.

    By default ``mediaconduit worker --capability …``; with ``queue``, plain ``celery worker -Q queue``
    (a private queue keeps a job on the worker whose environment a test chose; ``program`` runs it instead
    of ``python -m celery``). ``pool`` is Celery's
    pool (``prefork``, ``threads``, ``gevent``); prefork unless a test asks, as the fault tests kill children.
    An I/O pool runs in one process (the node ``hostname``). ``args`` go to the end of the command line.
    """

    def __init__(self, capabilities: list[str] | None = None, concurrency: int = 2,
                 env: dict[str, str] | None = None, *, queue: str | None = None, drop: list[str] | None = None,
                 pool: str = "prefork", args: list[str] | None = None, program: list[str] | None = None) -> None:
        name = f"{queue or 'w'}-{uuid.uuid4().hex[:8]}"
        self.log = RUN_DIR / f"{name}.log"
        self.hostname = f"{name}@{socket.gethostname()}"
        if queue:
            celery = program or [sys.executable, "-m", "celery"]
            cmd = [*celery, "-A", "mediaconduit_worker.celery_app", "worker", "-Q", queue]
        else:
            cmd = [sys.executable, "-m", "mediaconduit_worker.cli", "worker", "--processes", "1"]
            for cap in capabilities or ["text-to-text"]:
                cmd += ["--capability", cap]
        cmd += ["-P", pool, "-c", str(concurrency), "-n", self.hostname, "-l", "INFO", *(args or [])]
        self.pool = pool
        environ = {**os.environ, **(env or {})}
        for var in drop or []:
            environ.pop(var, None)
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=environ,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> Self:
        from mediaconduit_worker.celery_app import app
        from mediaconduit_worker.worker.status import wait_for_workers

        try:
            wait_for_workers(app, destination=[self.hostname], timeout=timeout, alive=lambda: self.proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            raise type(exc)(f"{exc}:\n{self.log_text()[-4000:]}") from None
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        from mediaconduit_worker.cli.worker import stop_process

        stop_process(self.proc)


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(capabilities: list[str] | None = None, concurrency: int = 2, env: dict[str, str] | None = None,
              pool: str = "prefork") -> WorkerProcess:
        w = WorkerProcess(capabilities or ["text-to-text"], concurrency, env, pool=pool)
        started.append(w)
        return w.wait_ready()

    yield start
    for w in started:
        w.stop()


POOLS = ["prefork", "threads", "gevent"]
#: Runs a test once per Celery pool on the shared ``text_worker``: one worker at a time serves text-to-text,
#: since pytest stops the instance of one pool before it starts the next.
on_each_pool = pytest.mark.parametrize("text_worker", POOLS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def text_worker(request: pytest.FixtureRequest) -> Iterator[WorkerProcess]:
    """A text-to-text pool shared by the tests that only need one (prefork unless ``on_each_pool``)."""
    pool = getattr(request, "param", "prefork")
    w = WorkerProcess(["text-to-text"], concurrency=8 if pool != "prefork" else 2, pool=pool).wait_ready()
    yield w
    w.stop()


# -- Docker engine ------------------------------------------------------------------------------
REQUIRE_DOCKER = os.environ.get("MEDIACONDUIT_REQUIRE_DOCKER") == "1"
_DOCKER_USED = False


def _no_docker(reason: str) -> None:
    """Skip with the reason, or fail in CI (MEDIACONDUIT_REQUIRE_DOCKER=1, set by .ci/run)."""
    if REQUIRE_DOCKER:
        pytest.fail(f"MEDIACONDUIT_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine():
    """A Docker engine that answers, with the offline base image built; yields the SDK client.

    Without an engine the Docker tests skip (and fail in CI). At the end of the session every
    container this run started (labelled with its MEDIACONDUIT_HOME scope) is removed.
    """
    global _DOCKER_USED
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no engine" here
        _no_docker(f"no Docker engine answers: {type(exc).__name__}: {exc}")
    from mediaconduit_worker.settings import get_settings

    base = get_settings().base_image
    try:
        client.images.get(base)
    except Exception:
        script = REPO / "scripts" / "base-image.sh"
        if shutil.which("debootstrap") is None:
            _no_docker(f"base image {base!r} is missing and debootstrap is not installed (run `make base-image`)")
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"building the base image failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}", pytrace=False)
    _DOCKER_USED = True
    yield client
    _remove_our_containers()


def _remove_our_containers() -> None:
    """Containers and images this test run created (its scope label) are removed."""
    if not _DOCKER_USED:
        return
    from mediaconduit_worker.services import ServiceRegistry

    registry = ServiceRegistry()
    registry.remove_all()
    registry.remove_images()


def publish_reference() -> str:
    """This repository's ``providers/`` and ``services/`` as one repository, as a clone on a git host holds
    them (the reference providers name their services ``../../services/<name>-service``)."""
    folder = RUN_DIR / "reference"
    for part in ("providers", "services"):
        shutil.copytree(REPO / part, folder / part, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return publish(folder, "mediaconduit-worker", org="tests")


@pytest.fixture(scope="session")
def reference_url() -> str:
    """The monorepo of reference providers and services, at https://github.com/tests/mediaconduit-worker."""
    return publish_reference()


@pytest.fixture(scope="session")
def service_urls(docker_engine, reference_url) -> dict[str, str]:
    """The reference services as the reference providers name them: folders of the monorepo at its commit."""
    commit = head_commit(reference_url.rsplit("/", 1)[1], "tests")
    return {name: f"git+{reference_url}@{commit}#subdirectory=services/{name}-service"
            for name in ("cowsay", "espeak", "whisper", "tesseract", "ffmpeg")}


@pytest.fixture(scope="session")
def provider_urls(service_urls, reference_url) -> dict[str, str]:
    """The reference providers, each a folder of the monorepo (pip's ``#subdirectory=`` form)."""
    return {name: f"git+{reference_url}#subdirectory=providers/{name}-provider"
            for name in ("cowsay", "espeak", "whisper", "tesseract", "ffmpeg", "textrender")}
