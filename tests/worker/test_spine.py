"""The spine end to end: producer → Redis → worker process → provider loaded by URL → result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, free_port, head_commit, on_each_pool, publish

ECHO_MODULE = (REPO / "providers" / "echo-provider" / "src" / "echo_provider" / "__init__.py").read_text()
SLOW_IMPORT = ECHO_MODULE + "\nimport time as _time\n_time.sleep(0.5)  # widen the window in which loaders race\n"


def echo_manifest(**overrides: object) -> dict:
    manifest = {
        "id": "echo-copy",
        "name": "Echo copy",
        "type": "local",
        "capabilities": ["TEXT_TO_TEXT"],
        "models": [{"id": "echo", "name": "Echo", "capabilities": ["text-to-text"]}],
        "main": "provider.py",
        "exportName": "EchoProvider",
    }
    manifest.update(overrides)
    return manifest


@on_each_pool
def test_transform_reaches_its_capability_queue(text_worker, echo_url):
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app

    r = transform.delay("hello", echo_url, "upper")
    result = r.get(timeout=60)
    assert result["asset"]["content"] == "HELLO"
    meta = result["metadata"]
    prompt = meta["generation_prompt"]
    assert prompt["provider"] == "echo-provider"
    assert prompt["model_id"] == "upper"
    assert prompt["capability"] == "text-to-text"
    assert prompt["provider_url"] == echo_url
    assert prompt["source"] == {"kind": "git", "commit": head_commit("echo-provider")}
    assert prompt["input"] == "hello"
    assert not {"provider", "provider_url", "model", "capability", "source"} & set(meta)  # only in the prompt
    assert meta["worker"] == text_worker.hostname
    stored = app.backend.get_task_meta(r.id)
    assert stored["queue"] == "text-to-text"
    assert stored["name"] == "mediaconduit.transform"


@on_each_pool
def test_chain_result_carries_both_generation_prompts(text_worker, echo_url):
    from mediaconduit_worker import transform

    chain = transform.s("abc", echo_url, "reverse") | transform.s(echo_url, "upper", {"prefix": ">"})
    result = chain.delay().get(timeout=60)
    assert result["asset"]["content"] == ">CBA"
    outer = result["metadata"]["generation_prompt"]
    assert outer["model_id"] == "upper" and outer["options"] == {"prefix": ">"}
    inner = outer["input"]["metadata"]["generation_prompt"]
    assert inner["model_id"] == "reverse" and inner["input"] == "abc"
    assert outer["input"]["content"] == "cba"


@on_each_pool
def test_secret_options_never_reach_results_or_backend(text_worker, echo_url):
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app

    secret = "sk-test-0123456789abcdef"
    r = transform.delay("x", echo_url, "echo", {"api_key": secret, "note": secret})
    result = r.get(timeout=60)
    assert result["metadata"]["generation_prompt"]["options"] == {"api_key": "[REDACTED]", "note": "[REDACTED]"}
    raw = app.backend.client.get(app.backend.get_key_for_task(r.id))
    assert secret.encode() not in raw
    assert secret not in text_worker.log_text()


def test_explicit_capability_option_routes_the_job(echo_url):
    from mediaconduit_worker.celery_app import app

    router = app.amqp.router
    opts = router.route({}, "mediaconduit.transform", ("x", echo_url, "echo", {"capability": "AUDIO_TO_TEXT"}), {})
    assert opts["queue"].name == "audio-to-text"
    opts = router.route({}, "mediaconduit.transform", ("x", echo_url, "echo", None), {})
    assert opts["queue"].name == "text-to-text"


def test_unknown_capability_goes_to_default_queue_with_log_line(caplog):
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.app import DEFAULT_QUEUE

    url = "https://github.com/MediaConduit/no-such-provider"
    with caplog.at_level("WARNING"):
        opts = app.amqp.router.route({}, "mediaconduit.transform", ("x", url, "m", None), {})
    assert opts["queue"].name == DEFAULT_QUEUE
    assert "no-such-provider" in caplog.text and "default queue" in caplog.text


BAD_JOBS = {
    "unreachable-url": (lambda mp: "https://github.com/MediaConduit/does-not-exist", "echo", "does-not-exist"),
    "malformed-url": (lambda mp: "https://github.com/only-org", "echo", "https://github.com/only-org"),
    "bad-scheme": (lambda mp: "ftp://example.invalid/repo", "echo", "ftp://example.invalid/repo"),
    "missing-field": (lambda mp: mp("noid", {k: v for k, v in echo_manifest().items() if k != "id"},
                                    {"provider.py": ECHO_MODULE}), "echo", "field 'id'"),
    "mistyped-field": (lambda mp: mp("badtype", echo_manifest(models=[{"id": ["not", "a", "string"]}]),
                                     {"provider.py": ECHO_MODULE}), "echo", "field 'models.0.id'"),
    "unknown-model": (lambda mp: mp("unknown", echo_manifest(), {"provider.py": ECHO_MODULE}), "nope", "'nope'"),
    "provider-raises": (lambda mp: mp("raises", echo_manifest(), {"provider.py": ECHO_MODULE.replace(
        "started = time.perf_counter()", "raise RuntimeError('boom from provider')")}), "echo",
        "boom from provider"),
    "main-outside-repo": (lambda mp: mp("escape", echo_manifest(main="../../../etc/passwd"),
                                        {"provider.py": ECHO_MODULE}), "echo", "outside the repository"),
    "import-error": (lambda mp: mp("importerr", echo_manifest(), {"provider.py": "import no_such_module_xyz\n"}),
                     "echo", "no_such_module_xyz"),
}


@on_each_pool
@pytest.mark.parametrize("case", sorted(BAD_JOBS))
def test_bad_job_fails_clearly_and_worker_keeps_serving(case, text_worker, echo_url, make_provider):
    from mediaconduit_worker import transform

    make_url, model, culprit = BAD_JOBS[case]
    url = make_url(make_provider)
    r = transform.apply_async(("hello", url, model), queue="text-to-text")
    with pytest.raises(Exception) as info:
        r.get(timeout=60)
    assert r.state == "FAILURE"
    assert culprit in str(info.value)
    assert r.result is not None and (r.retries or 0) == 0
    assert transform.delay("still alive", echo_url, "echo").get(timeout=60)["asset"]["content"] == "still alive"


@on_each_pool
def test_non_json_input_is_refused_before_queueing_and_bad_json_input_fails(text_worker, echo_url):
    from mediaconduit_worker import InvalidInputError, transform

    with pytest.raises(InvalidInputError, match="JSON"):
        transform.delay(b"\x00bytes", echo_url, "echo")
    with pytest.raises(InvalidInputError, match="JSON"):
        transform.delay("x", echo_url, "echo", {"when": object()})
    r = transform.delay({"type": "spreadsheet", "rows": 3}, echo_url, "echo")
    with pytest.raises(Exception, match="spreadsheet"):
        r.get(timeout=60)
    r = transform.delay(42, echo_url, "echo")
    with pytest.raises(Exception, match="int"):
        r.get(timeout=60)
    assert transform.delay("ok", echo_url, "echo").get(timeout=60)["asset"]["content"] == "ok"


def test_two_workers_load_one_provider_at_the_same_moment(start_worker, make_provider):
    from celery import group

    from mediaconduit_worker import transform

    url = make_provider("slow", echo_manifest(dependencies={"cowsay": ">=6.1,<7"}), {"provider.py": SLOW_IMPORT})
    workers = [start_worker(["audio-to-audio"], concurrency=2) for _ in range(2)]
    jobs = group(transform.s(f"n{i}", url, "echo", {"capability": "audio-to-audio"}) for i in range(8))
    results = jobs.apply_async().get(timeout=240)
    assert sorted(r["asset"]["content"] for r in results) == sorted(f"n{i}" for i in range(8))
    assert {r["metadata"]["generation_prompt"]["source"]["commit"] for r in results} == {head_commit(url.rsplit("/", 1)[1], "tests")}
    assert {r["metadata"]["worker"] for r in results} == {w.hostname for w in workers}
    for w in workers:
        assert "Traceback" not in w.log_text()


def _resolve_in_fresh_process(url: str) -> dict:
    code = (
        "import json, sys, time\n"
        "from mediaconduit_worker.worker.loader import ProviderRegistry\n"
        "lp = ProviderRegistry().get(sys.argv[1])\n"
        "print(json.dumps(lp.source))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_fresh_process_reuses_disk_cache_and_pins_the_commit(tmp_path, make_provider):
    import shutil

    from conftest import MIRRORS

    url = make_provider("pinned", echo_manifest(), {"provider.py": ECHO_MODULE})
    name = url.rsplit("/", 1)[1]
    first = _resolve_in_fresh_process(url)
    assert first["commit"] == head_commit(name, "tests")
    # The remote moves on; the pin holds until `mediaconduit providers update`.
    folder = tmp_path / "v2"
    folder.mkdir()
    (folder / "MediaConduit.provider.yml").write_text(json.dumps(echo_manifest(version="2")))
    (folder / "provider.py").write_text(ECHO_MODULE)
    publish(folder, name, org="tests")
    second_commit = head_commit(name, "tests")
    assert second_commit != first["commit"]
    # Without the remote at all, a fresh process still loads from the disk cache.
    shutil.move(MIRRORS / "tests" / name, tmp_path / "gone")
    assert _resolve_in_fresh_process(url)["commit"] == first["commit"]
    shutil.move(tmp_path / "gone", MIRRORS / "tests" / name)
    updated = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "providers", "update", url],
                             capture_output=True, text=True, check=True)
    assert second_commit in updated.stdout
    assert _resolve_in_fresh_process(url)["commit"] == second_commit
    assert _resolve_in_fresh_process(f"{url}@{first['commit']}")["commit"] == first["commit"]


def test_url_forms_git_file_folder_and_ref(make_provider):
    from conftest import MIRRORS

    from mediaconduit_worker.worker.loader import ProviderRegistry

    url = make_provider("forms", echo_manifest(), {"provider.py": ECHO_MODULE})
    name = url.rsplit("/", 1)[1]
    bare = MIRRORS / "tests" / name
    bare_git = bare.with_name(name + ".git")
    bare_git.symlink_to(bare)
    commit = head_commit(name, "tests")
    registry = ProviderRegistry()
    for form in (f"git+file://{bare}", f"file://{bare_git}", f"git+file://{bare}@main", f"{url}@main", f"{url}@{commit}"):
        lp = registry.get(form)
        assert lp.source["commit"] == commit, form
        assert lp.provider.get_model("echo").transform("hi").content == "hi"
    folder = REPO / "providers" / "echo-provider"
    for form in (str(folder), f"file://{folder}"):
        lp = registry.get(form)
        assert lp.source["kind"] == "path"
        assert lp.provider.get_model("reverse").transform("ab").content == "ba"


def test_pypi_provider_from_an_index(tmp_path):
    """``pypi:NAME==VERSION`` installs through pip (pointed at a local find-links folder here)."""
    import zipfile

    wheel = tmp_path / "wheels" / "mc_echo_pkg-1.2.0-py3-none-any.whl"
    wheel.parent.mkdir()
    dist = "mc_echo_pkg-1.2.0.dist-info"
    files = {
        "mc_echo_pkg/__init__.py": ECHO_MODULE + (
            "\nEchoProvider.id = 'pkg-echo'\nEchoProvider.name = 'Packaged echo'\n"
            "EchoProvider.capabilities = [MediaCapability.TEXT_TO_TEXT]\n"
            "from mediaconduit_worker import ProviderModel\n"
            "EchoProvider.discover_models = lambda self: [ProviderModel('echo', 'Echo', capabilities=['text-to-text'])]\n"
        ),
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: mc-echo-pkg\nVersion: 1.2.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[mediaconduit.providers]\npkg-echo = mc_echo_pkg:EchoProvider\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    code = (
        "import json, sys\n"
        "from mediaconduit_worker.worker.loader import ProviderRegistry\n"
        "lp = ProviderRegistry().get('pypi:mc-echo-pkg==1.2.0')\n"
        "print(json.dumps([lp.source, lp.provider.id, lp.provider.get_model('echo').transform('p').content]))\n"
    )
    env = {**__import__("os").environ, "PIP_FIND_LINKS": str(wheel.parent), "PIP_NO_INDEX": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    source, pid, content = json.loads(out.stdout.splitlines()[-1])
    assert source["version"] == "mc-echo-pkg==1.2.0" and source["commit"] is None and pid == "pkg-echo" and content == "p"


def test_unknown_pypi_package_names_the_package(tmp_path):
    import os

    from mediaconduit_worker import ProviderLoadError
    from mediaconduit_worker.worker.loader import ProviderRegistry

    os.environ.update(PIP_FIND_LINKS=str(tmp_path), PIP_NO_INDEX="1")
    try:
        with pytest.raises(ProviderLoadError, match="no-such-mc-provider"):
            ProviderRegistry().get("pypi:no-such-mc-provider==9.9")
    finally:
        del os.environ["PIP_FIND_LINKS"], os.environ["PIP_NO_INDEX"]


def test_embedded_broker_starts_under_home_and_stops_cleanly(tmp_path):

    from mediaconduit_worker.worker.broker import EmbeddedRedis

    port = free_port()
    redis = EmbeddedRedis(tmp_path, port)
    url = redis.ensure_started()
    assert url == f"redis://127.0.0.1:{port}/0"
    assert redis.ensure_started() == url  # idempotent
    import redis as redis_py

    client = redis_py.Redis.from_url(url)
    client.set("k", "v")
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert Path(client.config_get("dir")["dir"]) == tmp_path / "redis"
    pid = int((tmp_path / "redis" / "redis.pid").read_text())
    assert redis.stop()
    assert not redis.ping()
    assert not Path(f"/proc/{pid}").exists()  # exited and reaped, no zombie left behind
    assert (tmp_path / "redis").is_dir()


def test_a_job_lands_in_exactly_one_queue(echo_url):
    """Every queue bound at once, one job published: one message in total, in its capability's queue."""
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app

    queues = list(app.conf.task_queues)  # the configured ones (tests that send to private queues add theirs to amqp.queues)
    assert len({q.routing_key for q in queues}) == len(queues) == 15
    with app.connection_for_write() as conn:
        for q in queues:
            q(conn.default_channel).declare()
        client = conn.default_channel.client
        before = {q.name: client.llen(q.name) for q in queues}
        transform.apply_async(("x", echo_url, "echo", {"capability": "image-to-3d"}))
        after = {q.name: client.llen(q.name) for q in queues}
    grown = {name: after[name] - before[name] for name in after if after[name] != before[name]}
    assert grown == {"image-to-3d": 1}
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete("image-to-3d")


def test_the_redacting_result_backend_keeps_the_configured_backends_own_methods():
    """Only ``store_result`` is ours; waiting for a result stays Redis pub/sub, not the base class's polling."""
    from celery.backends.redis import RedisBackend

    from mediaconduit_worker.celery_app import app

    backend = type(app.backend)
    assert isinstance(app.backend, RedisBackend)
    for name in ("wait_for_pending", "get_task_meta", "on_task_call", "set"):
        assert getattr(backend, name) is getattr(RedisBackend, name), name
    assert backend.store_result is not RedisBackend.store_result
