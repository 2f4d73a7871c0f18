"""The job pages in a real browser: Debian's headless Chromium, driven by Playwright, against a real gateway
process, real workers and the suite's Redis. What a page shows is compared with what the API returns for
the same job. Each test keeps a screenshot of every page it opened under ``.ci/artifacts/pages/``.

Without Chromium or Playwright the tests skip, and fail in CI (``MEDIACONDUIT_REQUIRE_CHROMIUM=1``, set by
.ci/run). Playwright drives the system browser (``executable_path``); it never downloads one.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml
from conftest import WorkerProcess, head_commit, publish

from .conftest import API, PRICE, GatewayProcess, create_key, default_routes_file, repo_path, wait_finished

REQUIRE_CHROMIUM = os.environ.get("MEDIACONDUIT_REQUIRE_CHROMIUM") == "1"
ARTIFACTS = repo_path(".ci", "artifacts", "pages")
WAIT_MS = 90_000
"""How long a page may take to show what the test waits for (a loaded 2-core machine)."""

MEDIA_PROVIDER = '''
import io
import math
import struct
import subprocess
import time
import wave

from mediaconduit_worker import Audio, MediaCapability, MediaProvider, TextToAudioModel, TextToVideoModel, Video


class Tone(TextToAudioModel):
    """A second of a 440 Hz tone as a WAV (8 kHz, 16-bit mono)."""

    def transform(self, input, options=None):
        started = time.perf_counter()
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
                                   for i in range(8000)))
        return Audio.from_bytes(out.getvalue(), "audio/wav",
                                metadata={"generation_prompt": self.generation_prompt(input, options, started)})


class Clip(TextToVideoModel):
    """A second of ffmpeg's test pattern as VP8 WebM, 160x120."""

    def transform(self, input, options=None):
        started = time.perf_counter()
        data = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=160x120:rate=10",
                               "-c:v", "libvpx", "-b:v", "200k", "-f", "webm", "pipe:1"],
                              capture_output=True, check=True).stdout
        return Video.from_bytes(data, "video/webm",
                                metadata={"generation_prompt": self.generation_prompt(input, options, started)})


class PageMedia(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_AUDIO: Tone, MediaCapability.TEXT_TO_VIDEO: Clip}
'''
MEDIA_MANIFEST = {"id": "page-media", "name": "Page media", "main": "provider.py", "exportName": "PageMedia",
                  "capabilities": ["text-to-audio", "text-to-video"],
                  "models": [{"id": "tone", "capabilities": ["text-to-audio"]},
                             {"id": "clip", "capabilities": ["text-to-video"]}]}
FLAKY_PROVIDER = '''
from mediaconduit_worker import MediaCapability, MediaProvider, TextToTextModel
from mediaconduit_worker.errors import TransientError


class Down(TextToTextModel):
    def transform(self, input, options=None):
        raise TransientError("the flaky candidate is down (on purpose)")


class Flaky(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: Down}
'''
FLAKY_MANIFEST = ("id: flaky\nname: Flaky\nmain: provider.py\nexportName: Flaky\n"
                  "models:\n  - {id: down, capabilities: [text-to-text]}\n")


def _no_browser(reason: str) -> None:
    if REQUIRE_CHROMIUM:
        pytest.fail(f"MEDIACONDUIT_REQUIRE_CHROMIUM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("Playwright is not installed (it is in the test extras: pip install -e '.[test]')")
    path = shutil.which("chromium")
    if path is None:
        _no_browser("no chromium on PATH (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path)
        yield chromium
        chromium.close()


@pytest.fixture
def browse(browser: Any, gateway: GatewayProcess, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``browse(api, path)``: a new browser signed in with the API's key through the sign-in form, at ``path``.
    Every page opened is kept as a screenshot when the test ends, passed or failed."""
    from mediaconduit_worker.worker.redis_state import state_redis

    # other tests of the run send bad keys from 127.0.0.1 on purpose; the brake must not stop these sign-ins
    state_redis().delete("mediaconduit:gateway:authfail:127.0.0.1")
    contexts: list[Any] = []

    def open_page(api: API, path: str = "/jobs") -> Any:
        context = browser.new_context(base_url=gateway.url, viewport={"width": 1200, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(path)
        assert page.url.startswith(f"{gateway.url}/login?"), page.url  # not signed in yet: sent to sign in
        page.fill("input[name=key]", api.key or "")
        page.click("button[type=submit]")
        page.wait_for_url(f"{gateway.url}{path}")
        return page

    yield open_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for k, context in enumerate(contexts):
        for n, page in enumerate(context.pages):
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{k}{n}.png"), full_page=True)
        context.close()


@pytest.fixture(scope="module")
def media_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The textrender reference provider's URL, after a worker of the image, audio and video queues started
    (the audio and video models are this module's ``page-media`` provider, published beside it)."""
    worker = WorkerProcess(["text-to-image", "text-to-audio", "text-to-video"], concurrency=1).wait_ready()
    yield publish(repo_path("providers", "textrender-provider"), "textrender-provider")
    worker.stop()


@pytest.fixture(scope="module")
def page_media_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("page-media")
    (folder / "provider.py").write_text(MEDIA_PROVIDER)
    (folder / "MediaConduit.provider.yml").write_text(yaml.safe_dump(MEDIA_MANIFEST))
    return publish(folder, f"page-media-{uuid.uuid4().hex[:6]}", org="tests")


def keep(page: Any, name: str) -> None:
    """A screenshot of the page as it is now, beside those the ``browse`` fixture takes at the end."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def rows(page: Any) -> dict[str, list[str]]:
    """The list page's rows: job id to its cells' text."""
    return {r.get_attribute("data-job"): [c.inner_text().strip() for c in r.query_selector_all("td")]
            for r in page.query_selector_all("#jobs tbody tr[data-job]")}


def test_the_list_page_shows_the_tenants_jobs_in_pages(alice: API, bob: API, browse, echo_url: str, slow_url: str,
                                                        text_worker) -> None:
    tenant = create_key(f"lister-{uuid.uuid4().hex[:6]}")
    lister = alice.as_key(tenant)
    made = [lister.call("createJob", json={"input": f"job {k}", "provider": echo_url, "model": "upper"}).json()
            for k in range(2)]
    made.append(lister.call("createJob", json={"input": "priced", "provider": slow_url, "model": "priced",
                                               "options": {"seconds": 0}}).json())
    jobs = [wait_finished(lister, j["id"]) for j in made]
    queued = lister.call("createJob", json={"input": "parked", "provider": slow_url, "model": "parked"}).json()
    bobs = bob.call("createJob", json={"input": "not yours", "provider": echo_url, "model": "upper"}).json()

    page = browse(lister)
    shown = rows(page)
    keep(page, "job-list")
    listed = lister.call("listJobs").json()["jobs"]
    assert list(shown) == [j["id"] for j in listed] == [queued["id"], *(j["id"] for j in reversed(jobs))]
    assert bobs["id"] not in shown
    for job in listed:
        status, job_id, provider, model, created, cost = shown[job["id"]]
        assert (status, job_id, provider, model) == (job["status"], job["id"], job["provider"], job["model"])
        assert created.startswith(job["created_at"][:10]) and created.endswith(" UTC")
    assert shown[queued["id"]][0] == "queued"
    assert shown[jobs[2]["id"]][5] == f"${PRICE:g}" and shown[jobs[0]["id"]][5] == "-"

    page.goto("/jobs?limit=2")  # paged as GET /v1/jobs is: the same jobs, the same pages
    first = rows(page)
    page.click("#next")
    second = rows(page)
    assert list(first) + list(second) == list(shown) and len(first) == 2
    assert page.query_selector("#next") is None
    page.goto("/jobs?status=succeeded")
    assert list(rows(page)) == [j["id"] for j in reversed(jobs)]
    page.click(f"a[href='/jobs/{jobs[0]['id']}']")
    assert page.inner_text("#status") == "succeeded"
    assert lister.call("cancelJob", {"job_id": queued["id"]}).status_code == 200


def test_a_job_page_follows_the_job_live_until_it_succeeds(alice: API, browse, slow_url: str, text_worker) -> None:
    job = alice.call("createJob", json={"input": "live", "provider": slow_url, "model": "priced",
                                        "options": {"seconds": 6}}).json()
    page = browse(alice, f"/jobs/{job['id']}")
    rendered = page.get_attribute("#job", "data-status")
    assert rendered in ("queued", "running"), rendered  # the server rendered it unfinished
    keep(page, "job-before-its-end")
    page.evaluate("""() => {
        window.keptAcrossUpdates = true;  // a reload would lose it
        window.seen = [document.getElementById("status").textContent];
        new MutationObserver(() => window.seen.push(document.getElementById("status").textContent))
            .observe(document.getElementById("facts"), {subtree: true, childList: true, characterData: true});
    }""")
    page.wait_for_selector("#result .result-text")  # swapped in once the stream said succeeded
    done = wait_finished(alice, job["id"])
    assert done["status"] == "succeeded"
    assert page.evaluate("window.keptAcrossUpdates") is True
    assert page.inner_text("#status") == "succeeded" and page.get_attribute("#job", "data-status") == "succeeded"
    assert page.inner_text("#result .result-text") == done["result"]["asset"]["content"] == "slept: live"
    assert page.inner_text("#cost") == f"${done['cost_usd']:g}"
    seen = page.evaluate("window.seen")
    assert seen[0] == rendered and "succeeded" in seen, seen


def test_a_chain_page_waits_for_its_last_step_and_a_cancel_shows_live(alice: API, browse, echo_url: str,
                                                                       slow_url: str, text_worker) -> None:
    """A chain's first step succeeding is not the job's end (its events carry the step); a job cancelled
    while its page is open turns canceled with its error, without a reload."""
    chain = alice.call("createJob", json={"input": "chained", "provider": slow_url, "model": "sleep",
                                          "options": {"seconds": 4}, "steps": [{"provider": echo_url, "model": "upper"}]}).json()
    page = browse(alice, f"/jobs/{chain['id']}")
    assert page.get_attribute("#job", "data-status") in ("queued", "running")
    page.evaluate("window.keptAcrossUpdates = true")
    page.wait_for_selector("#result .result-text")
    done = wait_finished(alice, chain["id"])
    assert page.inner_text("#result .result-text") == done["result"]["asset"]["content"] == "SLEPT: CHAINED"
    assert page.evaluate("window.keptAcrossUpdates") is True
    assert [s.inner_text() for s in page.query_selector_all("#steps tr.step-row .status")] == ["succeeded"] * 2

    parked = alice.call("createJob", json={"input": "parked", "provider": slow_url, "model": "parked"}).json()
    page.goto(f"/jobs/{parked['id']}")
    position = alice.call("getJob", {"job_id": parked["id"]}).json()["queue_position"]
    assert page.inner_text("#status") == "queued" and position >= 1
    assert f"queue position\n{position}" in page.inner_text("#facts").replace("\t", "\n")
    page.evaluate("window.keptAcrossUpdates = true")
    keep(page, "queued-job")
    assert alice.call("cancelJob", {"job_id": parked["id"]}).status_code == 200
    page.wait_for_selector("#error")
    canceled = alice.call("getJob", {"job_id": parked["id"]}).json()
    assert page.inner_text("#status") == canceled["status"] == "canceled"
    assert canceled["error"]["message"] in page.inner_text("#error")
    assert page.evaluate("window.keptAcrossUpdates") is True


def test_image_audio_and_video_results_play_in_the_page(alice: API, browse, media_url: str,
                                                        page_media_url: str) -> None:
    from PIL import Image

    image = wait_finished(alice, alice.call("createJob", json={"input": "Job page", "provider": media_url,
                                                               "model": "render-png"}).json()["id"])
    assert image["status"] == "succeeded", image
    page = browse(alice, f"/jobs/{image['id']}")
    png = Image.open(io.BytesIO(alice.call("downloadFile", {"sha256": image["result"]["asset"]["sha256"]}).content))
    page.wait_for_function("document.querySelector('#result img').complete")
    size = page.evaluate("(() => { const i = document.querySelector('#result img'); "
                         "return [i.naturalWidth, i.naturalHeight]; })()")
    assert size == list(png.size) and size[0] > 0
    keep(page, "image-result")

    for model, tag, ready in (("tone", "audio", "duration"), ("clip", "video", "videoWidth")):
        job = wait_finished(alice, alice.call("createJob", json={"input": model, "provider": page_media_url,
                                                                 "model": model}).json()["id"])
        assert job["status"] == "succeeded", job
        page.goto(f"/jobs/{job['id']}")
        digest = job["result"]["asset"]["sha256"]
        assert page.get_attribute(f"#result {tag}", "src") == f"/files/{digest}"
        page.wait_for_function(f"document.querySelector('#result {tag}').readyState >= 1")  # metadata decoded
        assert page.evaluate(f"document.querySelector('#result {tag}').{ready}") > 0
        keep(page, f"{tag}-result")
        if tag == "video":
            assert page.evaluate("document.querySelector('#result video').videoWidth") == 160


def test_the_prompt_chain_steps_and_failover_attempts_are_shown(alice: API, browse, echo_url: str, text_worker,
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:

    secret = "sk-" + uuid.uuid4().hex
    chain = wait_finished(alice, alice.call("createJob", json={
        "input": "abc", "provider": echo_url, "model": "upper", "options": {"api_key": secret},
        "steps": [{"provider": echo_url, "model": "reverse"},
                  {"provider": echo_url, "model": "echo", "options": {"prefix": ">"}}]}).json()["id"])
    assert chain["status"] == "succeeded", chain
    page = browse(alice, f"/jobs/{chain['id']}")
    nodes = page.query_selector_all("#prompt li.prompt")
    prompts, prompt = [], chain["result"]["metadata"]["generation_prompt"]
    while isinstance(prompt, dict):  # the record's chain, last step first
        prompts.append(prompt)
        prompt = (prompt["input"].get("metadata") or {}).get("generation_prompt") if isinstance(prompt["input"], dict) else None
    models = [n.query_selector(".step-facts dd:nth-of-type(2)").inner_text() for n in nodes]
    assert models == [f"{p['model_id']} ({p['model_name']})" for p in prompts]
    assert [p["model_id"] for p in prompts] == ["echo", "reverse", "upper"]  # each input's step under its step
    commit = head_commit("echo-provider")
    assert [n.query_selector(".step-facts code").inner_text() for n in nodes] == [commit] * 3
    assert '"prefix": ">"' in nodes[0].inner_text() and "[REDACTED]" in nodes[2].inner_text()
    inputs = [p["input"]["content"] if isinstance(p["input"], dict) else p["input"] for p in prompts]
    assert [q.inner_text() for q in page.query_selector_all("#prompt q")] == inputs and inputs[-1] == "abc"
    assert secret not in page.content()
    assert len(page.query_selector_all("#steps tr.step-row")) == 3

    folder = tmp_path_factory.mktemp("flaky")
    (folder / "provider.py").write_text(FLAKY_PROVIDER)
    (folder / "MediaConduit.provider.yml").write_text(FLAKY_MANIFEST)
    flaky = publish(folder, f"flaky-{uuid.uuid4().hex[:6]}", org="tests")
    with default_routes_file({"routes": {"page-failover": {"candidates": [
            {"provider": flaky, "model": "down"}, {"provider": echo_url, "model": "upper"}]}}}):
        routed = wait_finished(alice, alice.call("createJob", json={"input": "fell over", "route": "page-failover",
                                                                    "model": None}).json()["id"])
    assert routed["status"] == "succeeded", routed
    page.goto(f"/jobs/{routed['id']}")
    attempts = [[c.inner_text() for c in row.query_selector_all("td")]
                for row in page.query_selector_all("#steps tr.attempt")]
    expected = routed["steps"][0]["attempts"]
    assert [(a[0], a[1], a[2], a[3]) for a in attempts] == [
        (str(e["candidate"]), e["provider"], e["model"], e["error"] or "served") for e in expected]
    assert [a[3] for a in attempts] == ["TransientError", "served"]
    assert "the flaky candidate is down" in attempts[0][6]
    assert page.inner_text("#facts").count("route:page-failover") == 1


def test_pages_need_a_session_and_another_tenants_job_is_404(alice: API, bob: API, browse, gateway: GatewayProcess,
                                                             media_url: str) -> None:
    job = wait_finished(alice, alice.call("createJob", json={"input": "mine", "provider": media_url,
                                                             "model": "render-png"}).json()["id"])
    digest = job["result"]["asset"]["sha256"]
    page = browse(bob)
    for path in (f"/jobs/{job['id']}", f"/jobs/{uuid.uuid4()}"):
        answer = page.goto(path)
        assert answer.status == 404 and page.inner_text("h1") == "Not found"
    for path in (f"/files/{digest}", f"/jobs/{job['id']}/events"):
        assert page.request.get(path).status == 404
    page.goto("/jobs")
    assert job["id"] not in rows(page)

    own = browse(alice, f"/jobs/{job['id']}")
    assert own.request.get(f"/files/{digest}").headers["content-type"] == "image/png"
    cookie = next(c for c in own.context.cookies() if c["name"] == "mediaconduit_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["value"] != alice.key and alice.key not in own.content()
    assert own.evaluate("document.cookie") == ""  # no script reads the session
    headers = own.request.get(f"/jobs/{job['id']}").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"] and headers["cache-control"] == "no-store"
    # the API takes bearer keys only: the browser's session opens no /v1 call
    assert own.request.get("/v1/jobs").status == 401

    plain = httpx.Client(base_url=gateway.url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.3"))
    assert plain.get("/jobs", follow_redirects=False).headers["location"] == "/login?next=%2Fjobs"
    assert plain.get(f"/files/{digest}").status_code == 401
    for sent_from in ({"Origin": "https://elsewhere.example"}, {"Sec-Fetch-Site": "cross-site"}):
        forged = plain.post("/login", data={"key": alice.key}, headers=sent_from)  # login CSRF
        assert forged.status_code == 403 and "set-cookie" not in forged.headers
    wrong = plain.post("/login", data={"key": "mck_" + "B" * 43})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text and "set-cookie" not in wrong.headers
    off_site = plain.post("/login", data={"key": alice.key, "next": "https://elsewhere.example/"}, follow_redirects=False)
    assert off_site.status_code == 303 and off_site.headers["location"] == "/jobs"

    # a revoked key ends its sessions; signing out ends one at once
    tenant = f"leaver-{uuid.uuid4().hex[:6]}"
    leaver = browse(alice.as_key(create_key(tenant)))
    from mediaconduit_worker.gateway.tenants import KeyStore
    from mediaconduit_worker.worker.redis_state import state_redis

    KeyStore(state_redis()).revoke(f"tenant:{tenant}")
    leaver.goto("/jobs")
    assert leaver.url.startswith(f"{gateway.url}/login?")
    own.click("header button")
    own.wait_for_url(re.compile(r".*/login$"))
    assert own.goto(f"/jobs/{job['id']}").url.startswith(f"{gateway.url}/login?")


def test_the_login_form_counts_bad_keys_like_the_api(alice: API, gateway: GatewayProcess) -> None:
    from .conftest import AUTH_FAILURES

    guesser = httpx.Client(base_url=gateway.url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.4"))
    codes = [guesser.post("/login", data={"key": f"mck_{k}" + "C" * 42}).status_code for k in range(AUTH_FAILURES)]
    assert codes == [401] * AUTH_FAILURES
    braked = guesser.post("/login", data={"key": alice.key})
    assert braked.status_code == 429 and int(braked.headers["retry-after"]) >= 1
    assert "set-cookie" not in braked.headers


def test_markup_in_a_job_is_shown_as_text_and_never_runs(alice: API, browse, echo_url: str, text_worker) -> None:
    hostile = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2"><b id="bold">b</b>'
    job = wait_finished(alice, alice.call("createJob", json={
        "input": hostile, "provider": echo_url, "model": "echo", "options": {"prefix": '"><svg onload="window.pwned=3">'}
    }).json()["id"])
    assert job["status"] == "succeeded", job
    page = browse(alice, f"/jobs/{job['id']}")
    listed = browse(alice)
    for shown in (page, listed):
        shown.wait_for_load_state("load")
        assert shown.evaluate("typeof window.pwned") == "undefined"
        assert shown.query_selector("#job img[src='x'], #bold, svg") is None
    assert page.inner_text("#result .result-text") == job["result"]["asset"]["content"]
    assert job["result"]["asset"]["content"].endswith(hostile)
    assert hostile in page.inner_text("#prompt")  # the input, as text
