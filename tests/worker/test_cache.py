"""The opt-in result cache, end to end: a thread-pool worker, the OpenAI provider against its stand-in
(which counts the calls that reached the API), results and claims in the real Redis."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import POOLS, REPO, head_commit, publish
from support.remote import QueueWorker
from support.standin_apis import Reply, StandInAPIs

CHAT = "/openai/v1/chat/completions"


@pytest.fixture(autouse=True)
def _fresh(apis: StandInAPIs) -> None:
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.cli.cache import clear

    apis.reset()
    clear(app.backend.client)


@pytest.fixture(scope="module")
def openai_url() -> str:
    return publish(REPO / "providers" / "openai-provider", "openai-provider")


@pytest.fixture(scope="module", params=POOLS)
def worker(request: pytest.FixtureRequest, apis: StandInAPIs, openai_url: str) -> Iterator[QueueWorker]:
    """Each test once per pool: single flight and leases must hold across processes, threads and greenlets."""
    slots = 4 if request.param == "prefork" else 32
    w = QueueWorker("cache-tests", apis.env(), pool=request.param, concurrency=slots).wait_ready()
    yield w
    w.stop()


def cached(result: dict) -> dict | None:
    return result["metadata"].get("cache")


def test_a_hit_makes_no_call_and_says_where_it_came_from(worker, openai_url, apis):
    first = worker.run("Hello", openai_url, "gpt-4o-mini", {"temperature": 0, "cache": True})
    again = worker.run("Hello", openai_url, "gpt-4o-mini", {"temperature": 0, "cache": True})
    assert len(apis.calls(CHAT)) == 1
    assert cached(first) == {"hit": False, "key": cached(first)["key"]} and len(cached(first)["key"]) == 64
    assert cached(again) == {"hit": True, "key": cached(first)["key"]}  # not the task that computed it
    assert again["asset"] == first["asset"] and again["metadata"]["task_id"] != first["metadata"]["task_id"]
    assert "cache" not in first["metadata"]["generation_prompt"]["options"]  # neither stored nor sent
    assert "cache" not in apis.calls(CHAT)[0].body
    uncached = worker.run("Hello", openai_url, "gpt-4o-mini", {"temperature": 0})
    assert cached(uncached) is None and len(apis.calls(CHAT)) == 2


def test_a_change_of_model_options_or_input_misses(worker, openai_url, apis):
    base = ("Hello", "gpt-4o-mini", {"temperature": 0, "cache": True})
    keys = set()
    for text, model, opts in [base, ("Hello", "gpt-4o", base[2]), ("Hello", "gpt-4o-mini", {"temperature": 0.5, "cache": True}),
                              ("Hello!", "gpt-4o-mini", base[2]), base]:
        keys.add(cached(worker.run(text, openai_url, model, opts))["key"])
    assert len(keys) == 4 and len(apis.calls(CHAT)) == 4  # the last repeats the first


def test_a_new_commit_of_the_provider_misses(worker, apis, tmp_path: Path):
    folder = tmp_path / "provider"
    shutil.copytree(REPO / "providers" / "openai-provider", folder)
    name = f"openai-cache-copy-{uuid.uuid4().hex[:6]}"  # its own repository per pool: each run pushes two commits
    url = publish(folder, name, org="tests")
    first = head_commit(name, "tests")
    (folder / "CHANGELOG.md").write_text("a new release\n")
    publish(folder, name, org="tests")
    second = head_commit(name, "tests")
    a = worker.run("Hi", f"{url}@{first}", "gpt-4o-mini", {"cache": True})
    b = worker.run("Hi", f"{url}@{second}", "gpt-4o-mini", {"cache": True})
    c = worker.run("Hi", f"{url}@{first}", "gpt-4o-mini", {"cache": True})
    assert [cached(r)["hit"] for r in (a, b, c)] == [False, False, True]
    assert a["metadata"]["generation_prompt"]["source"]["commit"] == first
    assert b["metadata"]["generation_prompt"]["source"]["commit"] == second
    assert len(apis.calls(CHAT)) == 2


def test_a_chained_input_is_keyed_by_its_content_not_its_history(worker, openai_url, echo_url, apis):
    plain = worker.run("Bonjour", openai_url, "gpt-4o-mini", {"cache": True})
    step = worker.run("ruojnoB", echo_url, "reverse")  # a result whose content is "Bonjour", with a history
    chained = worker.run(step, openai_url, "gpt-4o-mini", {"cache": True})
    assert cached(chained) == {"hit": True, "key": cached(plain)["key"]}
    assert len(apis.calls(CHAT)) == 1


def test_another_credential_never_gets_the_owners_result_and_secrets_are_never_stored(worker, openai_url, apis):
    from mediaconduit_worker import ProviderHTTPError
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.cache import PREFIX

    one, two = "sk-user-one-0123456789abcdef", "sk-user-two-0123456789abcdef"
    a = worker.run("Hello", openai_url, "gpt-4o-mini", {"api_key": one, "cache": True})
    again = worker.run("Hello", openai_url, "gpt-4o-mini", {"api_key": one, "cache": True})
    assert cached(again) == {"hit": True, "key": cached(a)["key"]} and len(apis.calls(CHAT)) == 1
    # A wrong key misses: its call reaches the API, which refuses it; the owner's paid result is not served.
    apis.script("POST", CHAT, Reply(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}))
    with pytest.raises(ProviderHTTPError, match="401"):
        worker.run("Hello", openai_url, "gpt-4o-mini", {"api_key": two, "cache": True})
    assert len(apis.calls(CHAT)) == 2
    stored = app.backend.client.get(PREFIX + cached(a)["key"])
    assert stored and one.encode() not in stored and two.encode() not in stored
    from mediaconduit_worker.worker.signing import installation_secret

    secret = installation_secret()  # keys the cache key: never in an entry, a result or a log
    assert secret not in stored and secret.decode() not in json.dumps([a, again]) + worker.log_text()
    # An output that carries a secret option's value is not stored at all.
    c = worker.run("sk-user-one-0123456789abcdef", openai_url, "gpt-4o-mini", {"api_key": one, "cache": True})
    assert app.backend.client.get(PREFIX + cached(c)["key"]) is None
    assert "not cached, its result contains a secret" in worker.log_text()


def test_options_whose_names_look_secret_still_differ_by_value(worker, make_provider):
    """``key`` (a musical key) and ``pass`` (a pass number) are redacted as credential names, yet decide the
    output: each value gets its own entry, and its own result."""
    code = (
        "from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text\n"
        "class Model(TextToTextModel):\n"
        "    def transform(self, input, options=None):\n"
        "        key = str(options.get('key')).lower().replace(' ', '-')  # a result quoting a secret is not stored\n"
        "        return Text.from_string(f\"{input_text(input)} in {key}, pass {options.get('pass')}\")\n"
        "class Tune(MediaProvider):\n"
        "    model_classes = {MediaCapability.TEXT_TO_TEXT: Model}\n"
    )
    manifest = {"id": "tune", "name": "Tune", "capabilities": ["text-to-text"], "main": "provider.py",
                "models": [{"id": "arrange", "cache": True}]}
    url = make_provider("tune", manifest, {"provider.py": code})
    pairs = [({"key": "C major"}, {"key": "D minor"}), ({"pass": 1}, {"pass": 2})]
    for first, second in pairs:
        a, b = worker.run("a tune", url, "arrange", first), worker.run("a tune", url, "arrange", second)
        assert not cached(a)["hit"] and not cached(b)["hit"] and cached(a)["key"] != cached(b)["key"]
        assert a["asset"]["content"] != b["asset"]["content"]
        again = worker.run("a tune", url, "arrange", first)
        assert cached(again) == {"hit": True, "key": cached(a)["key"]} and again["asset"] == a["asset"]
    assert worker.run("a tune", url, "arrange", {"key": "D minor"})["asset"]["content"] == "a tune in d-minor, pass None"


def test_identical_jobs_in_flight_make_one_call(worker, openai_url, apis):
    slow = Reply(200, {"id": "c", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "once"}}]}, delay=1.5)
    apis.script("POST", CHAT, slow)  # the first call is slow: the other 19 arrive meanwhile
    jobs = [worker.submit("same", openai_url, "gpt-4o-mini", {"cache": True}) for _ in range(20)]
    results = [j.get(timeout=60) for j in jobs]
    assert len(apis.calls(CHAT)) == 1
    assert {r["asset"]["content"] for r in results} == {"once"}
    (owner,) = [r for r in results if not cached(r)["hit"]]
    assert {cached(r)["key"] for r in results} == {cached(owner)["key"]}


def test_a_dead_workers_claim_lapses_and_a_waiting_job_takes_over(worker, openai_url, apis):
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.cli.cache import clear
    from mediaconduit_worker.worker.cache import CLAIM_PREFIX

    key = cached(worker.run("probe", openai_url, "gpt-4o-mini", {"cache": True, "seed": 1}))["key"]
    clear(app.backend.client)
    # A claim nobody renews: its worker died mid-job. It lapses after 1.5 s and the waiting job runs itself.
    app.backend.client.set(CLAIM_PREFIX + key, "dead-task", px=1500)
    started = time.monotonic()
    result = worker.run("probe", openai_url, "gpt-4o-mini", {"cache": True, "seed": 1})
    assert time.monotonic() - started >= 1.2
    assert cached(result) == {"hit": False, "key": key} and len(apis.calls(CHAT)) == 2


def test_a_model_marked_cache_true_in_its_manifest_is_cached_unless_a_job_says_no(worker, make_provider, tmp_path):
    calls = tmp_path / "calls"
    code = (
        "from pathlib import Path\n"
        "from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text\n"
        "class Model(TextToTextModel):\n"
        "    def transform(self, input, options=None):\n"
        f"        with open({str(calls)!r}, 'a') as f: f.write('x')\n"
        "        return Text.from_string(input_text(input).upper())\n"
        "class Upper(MediaProvider):\n"
        "    model_classes = {MediaCapability.TEXT_TO_TEXT: Model}\n"
    )
    manifest = {"id": "det", "name": "Deterministic", "capabilities": ["text-to-text"], "main": "provider.py",
                "models": [{"id": "upper", "cache": True}, {"id": "upper-fresh"}]}
    url = make_provider("det", manifest, {"provider.py": code})
    results = [worker.run("abc", url, m, o) for m, o in
               [("upper", {}), ("upper", {}), ("upper", {"cache": False}), ("upper-fresh", {}), ("upper-fresh", {})]]
    assert [r["asset"]["content"] for r in results] == ["ABC"] * 5
    assert [(cached(r) or {}).get("hit") for r in results] == [False, True, None, None, None]
    assert calls.read_text() == "xxxx"


def test_entries_expire_after_the_ttl_and_the_cli_reports_and_clears(apis, openai_url):
    from click.testing import CliRunner

    from mediaconduit_worker.cli import main

    w = QueueWorker("cache-ttl-tests", {**apis.env(), "MEDIACONDUIT_CACHE_TTL": "1"}, pool="threads").wait_ready()
    try:
        first = w.run("Hello", openai_url, "gpt-4o-mini", {"cache": True})
        hit = w.run("Hello", openai_url, "gpt-4o-mini", {"cache": True})
        stats = json.loads(CliRunner().invoke(main, ["cache", "stats", "--json"], catch_exceptions=False).output)
        assert stats | {"bytes": 0, "ttl": 0} == {"entries": 1, "bytes": 0, "ttl": 0, "hits": 1, "misses": 1,
                                                  "waits": 0, "stores": 1}
        time.sleep(1.6)
        expired = w.run("Hello", openai_url, "gpt-4o-mini", {"cache": True})
        out = CliRunner().invoke(main, ["cache", "clear"], catch_exceptions=False).output  # within its new TTL
    finally:
        w.stop()
    assert [cached(r)["hit"] for r in (first, hit, expired)] == [False, True, False]
    assert len(apis.calls(CHAT)) == 2
    assert out.strip() == "removed 1 cached results"
    assert "0 entries" in CliRunner().invoke(main, ["cache", "stats"], catch_exceptions=False).output


def test_an_entry_stored_in_record_format_1_is_served_as_format_2(worker, openai_url, apis):
    """Entries written by an older worker stay useful: a format 1 record under a job's key comes back upgraded."""
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.cache import PREFIX

    first = worker.run("Hello v1", openai_url, "gpt-4o-mini", {"cache": True})
    key = cached(first)["key"]
    v1 = json.loads((REPO / "tests" / "fixtures" / "record-v1.json").read_text()
                    .replace("@@PROVIDER_URL@@", openai_url).replace("@@COMMIT@@", "c" * 40))
    app.backend.client.set(PREFIX + key, json.dumps({"result": v1, "task_id": "older-task", "stored_at": time.time()}))
    again = worker.run("Hello v1", openai_url, "gpt-4o-mini", {"cache": True})
    assert len(apis.calls(CHAT)) == 1 and cached(again) == {"hit": True, "key": key}  # not the older task's id
    prompt = again["metadata"]["generation_prompt"]
    assert prompt["record_version"] == "2" and prompt["source"] == {"kind": "git", "ref": "main", "commit": "c" * 40}
    assert prompt["provider_url"] == openai_url and prompt["capability"] == "text-to-text"
    assert again["asset"] == v1["asset"] and not {"provider", "source", "model"} & set(again["metadata"])
