"""The routes file as producers read it: checked whole, errors naming the route, the candidate and the
field, and ``route:NAME`` jobs sent to their route's capability queue (or refused) before any queueing.

The candidates are the real provider repositories, published behind github.com URLs as elsewhere;
their manifests say each model's capability, so no API is called here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from support.remote import publish_remote_providers

CHAT = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
IMAGE = "black-forest-labs/FLUX.1-schnell"


@pytest.fixture(scope="module")
def urls() -> dict[str, str]:
    return publish_remote_providers()


@pytest.fixture
def routes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The producer's MEDIACONDUIT_ROUTES, pointing at a file of this test's own."""
    from mediaconduit_worker.settings import get_settings

    path = tmp_path / "routes.yml"
    monkeypatch.setenv("MEDIACONDUIT_ROUTES", str(path))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def write(path: Path, routes: dict) -> None:
    path.write_text(yaml.safe_dump({"routes": routes}))


def error_of(path: Path, routes: dict) -> str:
    from mediaconduit_worker.errors import RouteError
    from mediaconduit_worker.worker.routes import get_routes

    write(path, routes)
    with pytest.raises(RouteError) as err:
        get_routes()
    return str(err.value)


def test_bad_routes_files_name_the_route_the_candidate_and_the_field(urls, routes_file, monkeypatch):
    from mediaconduit_worker.settings import get_settings

    together = {"provider": urls["together"], "model": CHAT}
    message = error_of(routes_file, {"chat": {"strategy": "round-robin", "candidates": [together]}})
    assert ("route 'chat', field 'strategy': Input should be 'fallback', 'weighted', 'least-busy', 'latency' or 'cost', "
            "got 'round-robin'") in message

    message = error_of(routes_file, {"chat": {"candidates": [together, {"provider": urls["xai"]}]}})
    assert f"route 'chat', candidate 2 ({urls['xai']}), field 'model': Field required" in message

    message = error_of(routes_file, {"chat": {"candidates": [together, {**together, "max_concurrency": 0}]}})
    assert "route 'chat', candidate 2" in message and "field 'max_concurrency': Input should be greater than 0, got 0" in message

    message = error_of(routes_file, {"chat": {"candidates": [{**together, "max_concurency": 3}]}})
    assert "route 'chat', candidate 1" in message and "field 'max_concurency': Extra inputs are not permitted, got 3" in message

    # Every bad value is quoted as written, except one under a credential's name, and cut short.
    message = error_of(routes_file, {"chat": {"cooldown": "half a minute", "candidates": [
        {**together, "api_key": "sk-live-0123456789abcdef0123", "pricing": {"prompt": "x" * 200}}]}})
    assert "field 'cooldown': Input should be a valid number, unable to parse string as a number, got 'half a minute'" in message
    assert "field 'api_key': Extra inputs are not permitted, got '[REDACTED]'" in message and "sk-live" not in message
    assert "field 'pricing.prompt': Input should be a valid number, unable to parse string as a number, got 'xxx" in message
    assert "x" * 100 not in message and "…" in message

    message = error_of(routes_file, {"chat": {"candidates": []}})
    assert "route 'chat', field 'candidates': List should have at least 1 item after validation, not 0, got []" in message

    message = error_of(routes_file, {"media": {"candidates": [together, {"provider": urls["together"], "model": IMAGE}]}})
    assert (f"route 'media' mixes capabilities: candidate 1 ({urls['together']} {CHAT}) is text-to-text, "
            f"candidate 2 ({urls['together']} {IMAGE}) is text-to-image") in message

    missing = "https://github.com/MediaConduit/no-such-provider"
    message = error_of(routes_file, {"chat": {"candidates": [together, {"provider": missing, "model": "m"}]}})
    assert f"route 'chat', candidate 2 ({missing} m): cannot tell its capability" in message

    # A candidate outside MEDIACONDUIT_PROVIDER_ALLOW is refused at load, even with its capability given.
    monkeypatch.setenv("MEDIACONDUIT_PROVIDER_ALLOW", urls["together"])
    get_settings.cache_clear()
    message = error_of(routes_file, {"chat": {"candidates": [together, {"provider": urls["xai"], "model": "grok-3",
                                                                        "capability": "text-to-text"}]}})
    assert f"route 'chat', candidate 2 ({urls['xai']} grok-3): " in message and "MEDIACONDUIT_PROVIDER_ALLOW" in message
    monkeypatch.delenv("MEDIACONDUIT_PROVIDER_ALLOW")
    get_settings.cache_clear()

    routes_file.write_text("routes: [unclosed")
    from mediaconduit_worker.errors import RouteError
    from mediaconduit_worker.worker.routes import get_routes

    with pytest.raises(RouteError, match="is not valid YAML"):
        get_routes()
    routes_file.unlink()
    with pytest.raises(RouteError, match=f"no routes file at {routes_file}"):
        get_routes()


def test_aliases_name_routes_and_bad_ones_are_refused_naming_the_alias(urls, routes_file):
    from mediaconduit_worker.errors import RouteError
    from mediaconduit_worker.worker.routes import get_routes

    chat = {"chat": {"candidates": [{"provider": urls["together"], "model": CHAT}]},
            "pictures": {"candidates": [{"provider": urls["together"], "model": IMAGE}]}}

    def aliased(aliases: object) -> str:
        routes_file.write_text(yaml.safe_dump({"routes": chat, "aliases": aliases}))
        with pytest.raises(RouteError) as err:
            get_routes()
        return str(err.value)

    assert "alias 'gpt-4o': names no route 'chatt' (routes: chat, pictures)" in aliased({"gpt-4o": "chatt"})
    assert "alias 'pictures': is a route's name already" in aliased({"pictures": "chat"})
    assert "alias 'dall-e': names no route 'gpt-4o'" in aliased({"gpt-4o": "chat", "dall-e": "gpt-4o"})
    assert "alias 'gpt-4o': Input should be a valid string, got 3" in aliased({"gpt-4o": 3})
    assert "field 'aliases': Input should be a valid dictionary, got ['chat']" in aliased(["chat"])
    routes_file.write_text(yaml.safe_dump({"routes": chat, "aliases": {"gpt-4o": "chat", "dall-e-3": "pictures"}}))
    table = get_routes()
    assert table.named("gpt-4o") is table.routes["chat"] and table.named("dall-e-3") is table.routes["pictures"]
    assert table.named("chat") is table.routes["chat"] and table.named("gpt-5") is None
    from mediaconduit_worker.cli import main

    out = CliRunner().invoke(main, ["routes", "check"], catch_exceptions=False)
    assert out.exit_code == 0 and {"gpt-4o: alias of chat", "dall-e-3: alias of pictures"} <= set(out.output.splitlines())


def test_a_routed_job_goes_to_its_routes_capability_queue(urls, routes_file):
    from mediaconduit_worker.worker.app import TRANSFORM_TASK, transform_queue

    write(routes_file, {
        "chat": {"strategy": "cost", "candidates": [{"provider": urls["together"], "model": CHAT},
                                                    {"provider": urls["openrouter"], "model": "openai/gpt-4o-mini"}]},
        "pictures": {"candidates": [{"provider": urls["together"], "model": IMAGE}]},
    })
    assert transform_queue(TRANSFORM_TASK, ("hi", "route:chat", None, {}), {}, {}) == {"queue": "text-to-text"}
    assert transform_queue(TRANSFORM_TASK, ("hi", "route:pictures"), {}, {}) == {"queue": "text-to-image"}
    # The file is read again when it changes.
    write(routes_file, {"chat": {"candidates": [{"provider": urls["together"], "model": "cartesia/sonic"}]}})
    assert transform_queue(TRANSFORM_TASK, ("hi", "route:chat", None, {}), {}, {}) == {"queue": "text-to-audio"}


def test_the_producer_refuses_a_bad_route_before_queueing(urls, routes_file):
    from mediaconduit_worker import InvalidInputError, transform
    from mediaconduit_worker.errors import RouteError

    write(routes_file, {"chat": {"candidates": [{"provider": urls["together"], "model": CHAT}]}})
    with pytest.raises(RouteError, match=rf"no route 'nope' in the routes file {routes_file} \(routes: chat\)"):
        transform.delay("x", "route:nope", None)
    with pytest.raises(InvalidInputError, match="names model 'gpt-4o': a route chooses its candidates' models"):
        transform.delay("x", "route:chat", "gpt-4o")
    with pytest.raises(InvalidInputError, match="asks for capability 'text-to-image', but the route serves text-to-text"):
        transform.delay("x", "route:chat", None, {"capability": "text-to-image"})
    write(routes_file, {"chat": {"strategy": "fastest", "candidates": [{"provider": urls["together"], "model": CHAT}]}})
    with pytest.raises(RouteError, match="route 'chat', field 'strategy'"):
        transform.delay("x", "route:chat", None)


def test_cli_checks_routes_and_refuses_a_bad_batch_before_queueing(urls, routes_file, tmp_path):
    from mediaconduit_worker.cli import main

    write(routes_file, {"chat": {"strategy": "latency", "candidates": [{"provider": urls["together"], "model": CHAT},
                                                                       {"provider": urls["xai"], "model": "grok-3"}]}})
    out = CliRunner().invoke(main, ["routes", "check"], catch_exceptions=False)
    assert out.exit_code == 0 and "chat: latency over 2 candidates -> queue text-to-text" in out.output

    items = tmp_path / "in.jsonl"
    items.write_text('"a"\n"b"\n')
    args = ["batch", str(items), "--out", str(tmp_path / "out.jsonl")]
    out = CliRunner().invoke(main, [*args, "--provider", "route:chat", "--model", CHAT])
    assert out.exit_code != 0 and "a route chooses its candidates' models" in out.output
    out = CliRunner().invoke(main, [*args, "--provider", "route:other"])
    assert out.exit_code != 0 and "no route 'other'" in out.output
    out = CliRunner().invoke(main, [*args, "--provider", urls["together"]])
    assert out.exit_code != 0 and "--model is required" in out.output
    assert not (tmp_path / "out.jsonl").exists()  # nothing was queued
