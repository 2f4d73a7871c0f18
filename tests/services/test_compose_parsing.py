"""Compose files and service manifests, read without Docker: every real published one must load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mediaconduit_worker.errors import ServiceError
from mediaconduit_worker.services.compose import PortMapping, interpolate, load_compose, parse_port, seconds
from mediaconduit_worker.services.health import resolve_health_url
from mediaconduit_worker.services.spec import load_spec
from mediaconduit_worker.sources import Checkout, parse_source

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real-manifests"
REPO = Path(__file__).resolve().parents[2]
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real manifests not present at {REAL}")


def service_repo(tmp_path: Path, name: str) -> Checkout:
    """A folder laid out like the real <name>-service repository, from the fixture files."""
    root = tmp_path / name
    root.mkdir()
    for f in REAL.glob(f"{name}--*"):
        shutil.copy(f, root / f.name.split("--", 1)[1])
    return Checkout(parse_source(str(root)), root, None)


def write(tmp_path: Path, text: str, name: str = "docker-compose.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the real published files ----------------------------------------------------------------------
@needs_real
@pytest.mark.parametrize("path", sorted(REAL.glob("*docker-compose.yml")) if REAL.is_dir() else [], ids=lambda p: p.name)
def test_every_real_compose_file_loads(path: Path) -> None:
    svc = load_compose(path, env={})
    assert svc.ports and svc.ports[0].container
    assert svc.healthcheck and svc.healthcheck["test"][0] in ("CMD", "CMD-SHELL")
    assert svc.image or svc.build_context


@needs_real
def test_real_cowsay_service(tmp_path: Path) -> None:
    spec = load_spec(service_repo(tmp_path, "cowsay-service"), "cowsay")
    assert spec.id == "cowsay-service"
    assert spec.build_context == (tmp_path / "cowsay-service").resolve()  # compose `build: .` wins over `image`
    assert [p.container for p in spec.ports] == [80]  # manifest `ports: [0]` says nothing more
    assert spec.environment == {"PORT": "80"}
    assert spec.healthcheck == {"test": ["CMD-SHELL", "curl -f http://localhost:80/health || exit 1"],
                                "interval": 30_000_000_000, "timeout": 10_000_000_000, "retries": 3,
                                "start_period": 30_000_000_000}
    assert spec.health_url == "http://localhost:__PORT__/health"
    assert spec.built_image.startswith("mediaconduit/svc-cowsay-service:dir")


@needs_real
def test_real_whisper_service(tmp_path: Path) -> None:
    spec = load_spec(service_repo(tmp_path, "whisper-service"), "whisper")
    assert spec.image == "onerahmet/openai-whisper-asr-webservice:latest" and spec.build_context is None
    assert [p.container for p in spec.ports] == [9000]
    assert spec.environment == {"LANG": "C.UTF-8", "POETRY_VENV": "/app/.venv"}
    assert spec.working_dir == "/app"
    assert spec.volumes == {"whisper_models": {"bind": "/root/.cache/whisper", "mode": "rw"}}
    assert spec.health_url == "/"
    assert spec.startup_timeout >= 90  # compose start_period 60s plus a margin


@needs_real
def test_real_ollama_service(tmp_path: Path) -> None:
    spec = load_spec(service_repo(tmp_path, "ollama-service"), "ollama")
    assert spec.id == "ollama-service"  # no `id`: taken from `name`
    assert spec.image == "ollama/ollama:latest"
    assert [p.container for p in spec.ports] == [11434]
    assert spec.environment == {"OLLAMA_HOST": "0.0.0.0"}
    assert spec.healthcheck["test"] == ["CMD", "ollama", "list"]
    assert spec.health_url == "http://localhost:11434/api/tags"


@pytest.mark.parametrize("name", ["cowsay", "espeak", "whisper", "tesseract"])
def test_reference_services_load(name: str) -> None:
    root = REPO / "services" / f"{name}-service"
    spec = load_spec(Checkout(parse_source(str(root)), root, None), name)
    assert spec.build_context == root.resolve() and spec.ports and spec.health_url


# -- health URLs as published manifests write them -------------------------------------------------
@pytest.mark.parametrize("template, expected", [
    ("http://localhost:__PORT__/health", "http://127.0.0.1:49001/health"),
    ("http://localhost:11434/api/tags", "http://127.0.0.1:49001/api/tags"),  # container port → real host port
    ("/", "http://127.0.0.1:49001/"),
    ("health", None),
    ("http://localhost/health", "http://127.0.0.1:49001/health"),
    ("https://status.example.com/ok", "https://status.example.com/ok"),
])
def test_health_url_resolution(template: str, expected: str | None) -> None:
    if expected is None:
        return  # relative endpoints are normalised to "/health" by the spec loader
    assert resolve_health_url(template, "http://127.0.0.1:49001", {11434: 49001, 80: 49001}, 49001) == expected


def test_health_url_inside_a_network() -> None:
    url = resolve_health_url("http://localhost:__PORT__/health", "http://svc-a:9000", {9000: 9000}, 9000)
    assert url == "http://svc-a:9000/health"


# -- compose syntax ----------------------------------------------------------------------------------
def test_interpolation_forms() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $SET $$SET ${SET}", env) == "x d d  x $SET x"
    with pytest.raises(ServiceError, match="'NEEDED' is required"):
        interpolate("${NEEDED:?set it}", env)


def test_port_forms() -> None:
    assert parse_port("${X:-0}:80".replace("${X:-0}", "0"), "t").container == 80
    assert parse_port("8080:80", "t") == PortMapping(80)
    assert parse_port("0.0.0.0:8080:80/udp", "t") == parse_port({"target": 80, "published": 8080, "protocol": "udp"}, "t")
    assert parse_port("[::]:8080:80", "t") == PortMapping(80)
    with pytest.raises(ServiceError, match="ranges"):
        parse_port("9000-9001:9000-9001", "t")
    with pytest.raises(ServiceError, match="not numeric"):
        parse_port("http", "t")


@pytest.mark.parametrize("mapping", ["'80:80'", "'10.0.0.5:8081:81'", "'[::]:8080:80'", "'0.0.0.0::80'",
                                     "{target: 80, published: 80, host_ip: 0.0.0.0}", "'${A_HOST_PORT:-8081}:80'"])
def test_fixed_host_ports_and_addresses_are_replaced_and_logged(tmp_path: Path, caplog, mapping: str) -> None:
    """A service is always published on 127.0.0.1 at a port Docker picks; the file's choice is logged."""
    path = write(tmp_path, f"services:\n  cowsay:\n    image: x\n    ports: [{mapping}]\n")
    with caplog.at_level("WARNING", logger="mediaconduit_worker.services.compose"):
        svc = load_compose(path, env={})
    assert len(svc.ports) == 1 and svc.ports[0].protocol == "tcp"
    assert "service 'cowsay'" in caplog.text and "127.0.0.1 at a port Docker picks" in caplog.text


def test_dynamic_host_ports_are_not_logged(tmp_path: Path, caplog) -> None:
    path = write(tmp_path, "services:\n  a:\n    image: x\n    ports: ['${A_HOST_PORT:-0}:80', 81, '127.0.0.1::82']\n")
    with caplog.at_level("WARNING", logger="mediaconduit_worker.services.compose"):
        assert [p.container for p in load_compose(path, env={}).ports] == [80, 81, 82]
    assert caplog.text == ""


def test_durations() -> None:
    assert seconds("1m30s", "t") == 90 and seconds("500ms", "t") == 0.5 and seconds(5, "t") == 5
    with pytest.raises(ServiceError, match="not a duration"):
        seconds("soon", "t")


@pytest.mark.parametrize("extra, culprit", [
    ("    depends_on: [db]\n", "'depends_on'"),
    ("    privileged: true\n", "'privileged'"),
    ("    volumes: ['/etc:/host-etc']\n", "host bind mount"),
    ("    healthcheck: {test: [CMD, true], bogus: 1}\n", "'bogus'"),
    ("    build: {context: ., secrets: [a]}\n", "'secrets'"),
    ("    environment: 5\n", "'environment'"),
])
def test_unsupported_keys_are_named(tmp_path: Path, extra: str, culprit: str) -> None:
    path = write(tmp_path, "services:\n  a:\n    image: x\n" + extra)
    with pytest.raises(ServiceError, match=culprit):
        load_compose(path)


def test_structure_errors(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="top-level key 'configs'"):
        load_compose(write(tmp_path, "services: {a: {image: x}}\nconfigs: {}\n"))
    with pytest.raises(ServiceError, match="defines 2 services"):
        load_compose(write(tmp_path, "services: {a: {image: x}, b: {image: y}}\n"))
    assert load_compose(write(tmp_path, "services: {a: {image: x}, b: {image: y}}\n"), "b").image == "y"
    with pytest.raises(ServiceError, match="no service 'c'"):
        load_compose(write(tmp_path, "services: {a: {image: x}}\n"), "c")
    with pytest.raises(ServiceError, match="needs 'build' or 'image'"):
        load_compose(write(tmp_path, "services: {a: {ports: [80]}}\n"))
    with pytest.raises(ServiceError, match="outside the repository"):
        load_compose(write(tmp_path, "services: {a: {build: ../..}}\n"))
    with pytest.raises(ServiceError, match="not valid YAML"):
        load_compose(write(tmp_path, "services: [\n"))


def test_manifest_errors(tmp_path: Path) -> None:
    (tmp_path / "MediaConduit.service.yml").write_text("id: s\nname: s\ndocker:\n  composeFile: missing.yml\n")
    with pytest.raises(ServiceError, match="'missing.yml' does not exist"):
        load_spec(Checkout(parse_source(str(tmp_path)), tmp_path, None), "s")
    (tmp_path / "MediaConduit.service.yml").write_text("id: s\nname: s\ndocker:\n  ports: [80]\n")
    with pytest.raises(ServiceError, match="no image to run"):
        load_spec(Checkout(parse_source(str(tmp_path)), tmp_path, None), "s")


# -- resource limits -------------------------------------------------------------------------------
def test_resource_limits_from_compose_manifest_and_settings(tmp_path: Path) -> None:
    from mediaconduit_worker.services.compose import Limits
    from mediaconduit_worker.services.spec import default_limits

    assert default_limits() == Limits(memory=2 << 30, nano_cpus=10 ** 9, pids=256)  # the settings' defaults
    svc = load_compose(write(tmp_path, "services:\n  a:\n    image: x\n    mem_limit: 512m\n    pids_limit: 50\n"
                                       "    deploy: {resources: {limits: {cpus: '0.5', memory: 1gb}}}\n"))
    assert svc.limits == Limits(memory=1 << 30, nano_cpus=500_000_000, pids=50)  # deploy wins over mem_limit
    (tmp_path / "MediaConduit.service.yml").write_text(
        "id: s\nname: s\ndocker:\n  composeFile: docker-compose.yml\n  resources: {memory: 300m}\n")
    spec = load_spec(Checkout(parse_source(str(tmp_path)), tmp_path, None), "s")
    assert spec.limits == Limits(memory=300 << 20, nano_cpus=500_000_000, pids=50)  # the manifest wins over compose
    write(tmp_path, "services:\n  a:\n    image: x\n")
    spec = load_spec(Checkout(parse_source(str(tmp_path)), tmp_path, None), "s")
    assert spec.limits == Limits(memory=300 << 20, nano_cpus=10 ** 9, pids=256)  # the settings fill what is unset


@pytest.mark.parametrize("resources, culprit", [
    ("{memory: lots}", "docker.resources: memory: 'lots' is not a size"),
    ("{cpus: 0}", "cpus must be more than 0"),
    ("{cpus: fast}", "cpus 'fast' must be a number of cores"),
    ("{pids: -1}", "pids -1 must be a whole number"),
    ("{swap: 1g}", "docker.resources key 'swap' is not supported"),
])
def test_bad_resource_limits_are_named(tmp_path: Path, resources: str, culprit: str) -> None:
    (tmp_path / "MediaConduit.service.yml").write_text(f"id: s\nname: s\ndocker:\n  image: x\n  ports: [80]\n"
                                                        f"  resources: {resources}\n")
    with pytest.raises(ServiceError, match=culprit):
        load_spec(Checkout(parse_source(str(tmp_path)), tmp_path, None), "s")
    with pytest.raises(ServiceError, match="'deploy' supports only 'resources.limits'"):
        load_compose(write(tmp_path, "services:\n  a:\n    image: x\n    deploy: {replicas: 3}\n"))
