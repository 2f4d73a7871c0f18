"""A job's input assets (assets.asset_from_json, fetch.py, blobs.py), called directly.

What a probe through a worker cannot show: inline bytes round-tripping, a tampered blob, the streaming
put, the address classifier on addresses this machine must never connect to, and an allowed URL
actually fetched. Every real address here is loopback, so the "public" server listens on 127.0.0.2
and the tests that fetch from it hand the fetcher a classifier that lets that one address through;
the loopback recorder on 127.0.0.1 stays refused and must never be hit.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mediaconduit_worker import Audio, Image, InvalidInputError, Text
from mediaconduit_worker.assets import asset_from_json, job_input
from mediaconduit_worker.blobs import BlobStore
from mediaconduit_worker.fetch import address_refusal, fetch_input
from mediaconduit_worker.settings import get_settings

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Settings from the environment for one test, with its own blob store."""

    def set_env(**values: Any) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"MEDIACONDUIT_{name.upper()}", str(value))
        get_settings.cache_clear()

    set_env(blob_dir=tmp_path / "blobs")
    yield set_env
    get_settings.cache_clear()


# -- inline data and blob references -------------------------------------------------------------
def test_inline_base64_round_trips_through_the_store(env):
    image = asset_from_json({"type": "image", "data": base64.b64encode(PNG).decode(), "mime_type": "image/png"})
    assert isinstance(image, Image) and image.data == PNG and image.mime_type == "image/png"
    ref = image.to_json()
    assert ref["uri"] == f"blob://sha256/{hashlib.sha256(PNG).hexdigest()}" and ref["size"] == len(PNG)
    again = asset_from_json({"asset": ref, "metadata": {"generation_prompt": {"model_id": "m"}}})
    assert again.data == PNG and again.generation_prompt == {"model_id": "m"}


def _record(asset: Any, prompt: Any = None, **metadata: Any) -> dict[str, Any]:
    """A result record as the worker's steps make one, through the builder."""
    from mediaconduit_worker.record import ResultBuilder

    builder = ResultBuilder()
    builder.complete_prompt({"model_id": "m"} if prompt is None else prompt, input="x", output=asset,
                            provider_url="https://x/p", source={"kind": "git", "commit": "c" * 40}, capability=None)
    if metadata:
        builder.note(**metadata)
    return builder.build(asset, processing_time_ms=1.5, task_id="t", worker=None)


def test_a_binary_result_is_the_next_steps_input(env):
    """A chain hands a whole TransformResult on: its asset is a blob reference with its digest."""
    result = _record(Image.from_bytes(PNG, "image/png"), {"model_id": "render"})
    assert result["asset"]["uri"].startswith("blob://sha256/") and result["asset"]["sha256"] == hashlib.sha256(PNG).hexdigest()
    step_two = job_input(result)
    assert isinstance(step_two, Image) and step_two.data == PNG
    assert step_two.generation_prompt["model_id"] == "render"
    assert step_two.generation_prompt["output_digest"] == hashlib.sha256(PNG).hexdigest()


@pytest.mark.parametrize("routed", [False, True])
def test_the_worker_builds_exactly_a_transform_results_json(env, routed):
    """The builder skips pydantic for speed; a ``TransformResult`` validated from it dumps the same JSON:
    unset metadata fields left out, non-JSON values (a datetime a provider put in its prompt) as JSON."""
    import datetime
    import json

    from mediaconduit_worker.record import TransformResult

    extra = {}
    if routed:
        extra = {"candidate": {"index": 2, "provider": "https://x/p", "model": "m"},
                 "attempts": [{"candidate": 1, "error": "ProviderHTTPError", "status": 503}]}
    for asset in (Text(content="hi", metadata={"cost": {"usd": 0.1}}), Image.from_bytes(PNG, "image/png")):
        built = _record(asset, {"model_id": "m", "at": datetime.datetime(2026, 1, 2, 3, 4, 5), "none": None}, **extra)
        dumped = TransformResult.model_validate(built).model_dump(mode="json", exclude_unset=True)
        assert built == dumped and json.loads(json.dumps(built)) == built
        assert list(built) == ["asset", "metadata"]
        prompt = built["metadata"]["generation_prompt"]
        assert prompt["at"] == "2026-01-02T03:04:05"
        assert prompt["capability"] is None and "ref" not in prompt["source"] and "worker" not in built["metadata"]
        assert ("candidate" in built["metadata"]) == routed


def test_the_builder_takes_only_result_metadata_fields(env):
    from mediaconduit_worker.record import ResultBuilder

    with pytest.raises(TypeError, match="provider_url"):
        ResultBuilder().note(provider_url="https://x/p")


@pytest.mark.parametrize("prompt_extra, expected", [
    ({"stops": ["a", "b"]}, ["a", "b"]),  # plain JSON: kept as it is
    ({"stops": ("a", "b")}, ["a", "b"]),  # a tuple comes back a list, as pydantic gives it
])
def test_a_result_record_is_pydantics_json_whether_or_not_it_was_plain(env, prompt_extra, expected):
    from mediaconduit_worker.record import TransformResult

    built = _record(Text(content="hi"), {"model_id": "m", **prompt_extra})
    assert built == TransformResult.model_validate(built).model_dump(mode="json", exclude_unset=True)
    assert type(built["metadata"]["generation_prompt"]["stops"]) is list
    assert built["metadata"]["generation_prompt"]["stops"] == expected


def test_data_url_gives_bytes_and_media_type(env):
    audio = asset_from_json({"type": "audio", "uri": "data:audio/ogg;base64," + base64.b64encode(b"OggS....").decode()})
    assert isinstance(audio, Audio) and audio.data == b"OggS...." and audio.mime_type == "audio/ogg"
    text_url = asset_from_json({"type": "image", "uri": "data:image/svg+xml,%3Csvg%2F%3E"})
    assert text_url.data == b"<svg/>" and text_url.mime_type == "image/svg+xml"


@pytest.mark.parametrize("value, message", [
    ({"type": "image", "data": "not base64!"}, "input field 'data' is not valid base64"),
    ({"type": "image", "data": 12}, "input field 'data' must be a base64 string"),
    ({"type": "image", "data": "AAAA", "uri": "blob://sha256/" + "0" * 64}, "either 'data' (base64) or 'uri'"),
    ({"type": "image"}, "input needs 'data' (base64) or a 'uri'"),
    ({"type": "image", "uri": "data:image/png;base64"}, "needs a ','"),
    ({"type": "image", "uri": "blob://sha256/../../etc/passwd"}, "input field 'uri': 'blob://sha256/../../etc/passwd' is not a blob"),
    ({"type": "image", "uri": "blob://sha256/" + "0" * 64}, "is not in the blob store"),
    ({"type": "image", "uri": "blob://sha256/" + "a" * 64, "sha256": "b" * 64}, "input field 'sha256'"),
    ({"type": "image", "uri": "file:///etc/passwd"}, "input field 'uri': file paths and file:// URLs are not accepted"),
    ({"type": "image", "uri": "/proc/self/environ"}, "input field 'uri': file paths"),
    ({"type": "image", "uri": "FILE:/etc/passwd"}, "input field 'uri': file paths"),
    ({"type": "image", "uri": "../../etc/passwd"}, "input field 'uri': file paths"),
    ({"type": "image", "uri": "C:\\Windows\\win.ini"}, "input field 'uri': file paths"),
    ({"type": "image", "uri": "ftp://example.invalid/x.png"}, "unsupported URL scheme 'ftp'"),
    ({"type": "image", "uri": "https://example.invalid/x.png"}, "MEDIACONDUIT_INPUT_URL_ALLOW is unset"),
    ({"type": "image", "data": "AAAA", "metadata": "not an object"}, "input field 'metadata'"),
])
def test_refused_asset_json_names_the_field(env, value, message):
    with pytest.raises(InvalidInputError) as err:
        asset_from_json(value)
    assert message in str(err.value)


def test_the_field_is_named_inside_lists_and_chained_results(env):
    with pytest.raises(InvalidInputError, match=r"input\[1\] field 'uri': file paths"):
        job_input(["text", {"type": "audio", "uri": "file:///etc/passwd"}])
    with pytest.raises(InvalidInputError, match=r"input\.asset field 'uri': file paths"):
        job_input({"asset": {"type": "image", "uri": "/etc/passwd"}, "metadata": {}})


def test_inline_size_cap(env):
    env(max_inline_bytes=1000)
    with pytest.raises(InvalidInputError, match="MEDIACONDUIT_MAX_INLINE_BYTES allows \\(1,000\\)"):
        asset_from_json({"type": "image", "data": base64.b64encode(b"x" * 2000).decode()})
    with pytest.raises(InvalidInputError, match="MEDIACONDUIT_MAX_INLINE_BYTES"):
        asset_from_json({"type": "image", "uri": "data:image/png," + "x" * 2000})
    assert asset_from_json({"type": "image", "data": base64.b64encode(b"x" * 900).decode()}).size == 900


def test_a_tampered_blob_is_refused_when_read(env):
    uri, digest = BlobStore().put(PNG)
    BlobStore().path_for(digest).write_bytes(b"something else")
    image = asset_from_json({"type": "image", "uri": uri, "sha256": digest})
    with pytest.raises(InvalidInputError, match="does not match its digest"):
        image.data  # noqa: B018
    with pytest.raises(InvalidInputError, match="does not match its digest"):
        BlobStore().get(uri)


def test_trusted_code_still_reads_files(env, tmp_path):
    (tmp_path / "in.png").write_bytes(PNG)
    assert Image(uri=str(tmp_path / "in.png")).data == PNG
    assert Image(uri=f"file://{tmp_path / 'in.png'}").to_json()["uri"] == BlobStore().put(PNG)[0]


def test_streaming_put_hashes_while_writing_and_keeps_nothing_on_failure(env):
    store = BlobStore()
    uri, digest, size = store.put_stream(iter([b"ab", b"cd", b"ef"]))
    assert digest == hashlib.sha256(b"abcdef").hexdigest() and size == 6 and store.get(uri) == b"abcdef"

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise InvalidInputError("too big")

    with pytest.raises(InvalidInputError):
        store.put_stream(broken())
    assert list((store.root / "incoming").iterdir()) == []


def test_text_assets_need_no_store(env):
    assert job_input({"type": "text", "content": "hi"}) == Text(content="hi")


# -- addresses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"),
    ("127.1.2.3", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fd00::1", "private"),
    ("fc00::5", "private"),
    ("169.254.169.254", "cloud metadata service"),
    ("fd00:ec2::254", "cloud metadata service"),
    ("100.100.100.200", "cloud metadata service"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "private"),
    ("255.255.255.255", "private"),
    ("198.18.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback, wrapped in ::ffff:7f00:1"),
    ("::ffff:169.254.169.254", "cloud metadata service, wrapped in ::ffff:a9fe:a9fe"),
    ("::ffff:10.0.0.1", "private, wrapped in ::ffff:a00:1"),
    ("2002:7f00:1::", "loopback, wrapped in 2002:7f00:1::"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata service, wrapped in 64:ff9b::a9fe:a9fe"),
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("2606:4700:4700::1111", None),
    ("::ffff:8.8.8.8", None),
])
def test_address_classifier(address, reason):
    assert address_refusal(address) == reason


# -- fetching allowed URLs ------------------------------------------------------------------------
PUBLIC = "127.0.0.2"  # stands in for a public address in these tests


def public_here(address: str) -> str | None:
    return None if address == PUBLIC else address_refusal(address)


class Site:
    """A small HTTP server; ``routes`` maps a path to (status, headers, body chunks, delay between chunks)."""

    def __init__(self, host: str) -> None:
        self.hits: list[str] = []
        self.routes: dict[str, tuple[int, dict[str, str], list[bytes], float]] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                site.hits.append(self.path)
                status, headers, chunks, delay = site.routes.get(self.path, (404, {}, [b"no"], 0.0))
                self.send_response(status)
                if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
                    headers = {**headers, "Content-Length": str(sum(map(len, chunks)))}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    for chunk in chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        time.sleep(delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def public_site() -> Iterator[Site]:
    site = Site(PUBLIC)
    yield site
    site.server.shutdown()


@pytest.fixture(scope="module")
def loopback_site() -> Iterator[Site]:
    site = Site("127.0.0.1")
    site.routes["/secret"] = (200, {}, [b"internal only"], 0.0)
    yield site
    site.server.shutdown()


def chunked(parts: list[bytes]) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]


def test_an_allowed_url_is_streamed_into_the_store(env, public_site):
    env(input_url_allow=f"{public_site.url}/media/")
    public_site.routes["/media/a.png"] = (200, {"Content-Type": "image/png"}, [PNG[:100], PNG[100:]], 0.0)
    uri, digest, size, mime = fetch_input(f"{public_site.url}/media/a.png", "input field 'uri'", refusal=public_here)
    assert BlobStore().get(uri) == PNG and size == len(PNG) and mime == "image/png"
    assert digest == hashlib.sha256(PNG).hexdigest()


def test_a_same_site_redirect_is_followed_and_rechecked(env, public_site):
    env(input_url_allow=f"{public_site.url}/media/")
    public_site.routes["/media/old.png"] = (302, {"Location": "/media/a.png"}, [], 0.0)
    public_site.routes["/media/a.png"] = (200, {"Content-Type": "image/png"}, [PNG], 0.0)
    assert fetch_input(f"{public_site.url}/media/old.png", "f", refusal=public_here)[2] == len(PNG)
    public_site.routes["/media/out.png"] = (302, {"Location": "/private/x.png"}, [], 0.0)
    with pytest.raises(InvalidInputError, match="not allowed by MEDIACONDUIT_INPUT_URL_ALLOW"):
        fetch_input(f"{public_site.url}/media/out.png", "f", refusal=public_here)


def test_a_redirect_to_loopback_is_refused_even_when_its_prefix_is_allowed(env, public_site, loopback_site):
    env(input_url_allow=f"{public_site.url}/media/,{loopback_site.url}/,http://localhost:{loopback_site.url.rsplit(':', 1)[1]}/")
    public_site.routes["/media/jump.png"] = (302, {"Location": f"{loopback_site.url}/secret"}, [], 0.0)
    with pytest.raises(InvalidInputError, match=r"f: .* is refused: 127\.0\.0\.1 is not a public address \(loopback\)"):
        fetch_input(f"{public_site.url}/media/jump.png", "f", refusal=public_here)
    localhost = loopback_site.url.replace("127.0.0.1", "localhost")
    with pytest.raises(InvalidInputError, match=r"localhost \(resolves to 127\.0\.0\.1\) is not a public address \(loopback\)"):
        fetch_input(f"{localhost}/secret", "f", refusal=public_here)
    assert loopback_site.hits == []


def test_redirect_loops_end(env, public_site):
    env(input_url_allow=f"{public_site.url}/media/")
    public_site.routes["/media/loop"] = (302, {"Location": "/media/loop"}, [], 0.0)
    with pytest.raises(InvalidInputError, match="redirects more than 5 times"):
        fetch_input(f"{public_site.url}/media/loop", "f", refusal=public_here)


def test_size_cap_by_header_and_by_stream(env, public_site):
    env(input_url_allow=f"{public_site.url}/media/", input_url_max_bytes=1000)
    public_site.routes["/media/declared"] = (200, {"Content-Length": "5000"}, [b"x" * 10], 0.0)
    with pytest.raises(InvalidInputError, match="is 5,000 bytes, more than MEDIACONDUIT_INPUT_URL_MAX_BYTES"):
        fetch_input(f"{public_site.url}/media/declared", "f", refusal=public_here)
    public_site.routes["/media/endless"] = (200, {"Transfer-Encoding": "chunked"}, chunked([b"y" * 400] * 5), 0.0)
    with pytest.raises(InvalidInputError, match="larger than MEDIACONDUIT_INPUT_URL_MAX_BYTES allows"):
        fetch_input(f"{public_site.url}/media/endless", "f", refusal=public_here)
    assert list((BlobStore().root / "incoming").iterdir()) == []


def test_a_slow_download_ends_at_the_deadline(env, public_site):
    env(input_url_allow=f"{public_site.url}/media/", input_url_timeout=1)
    public_site.routes["/media/drip"] = (200, {"Transfer-Encoding": "chunked"}, chunked([b"z"] * 20), 0.3)
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match="longer than MEDIACONDUIT_INPUT_URL_TIMEOUT"):
        fetch_input(f"{public_site.url}/media/drip", "f", refusal=public_here)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("url, message", [
    ("{site}/mediax/a.png", "not allowed"),
    ("http://{host}@evil.example/media/a.png", "carries credentials"),
    ("http://user:pw@{host}/media/a.png", "carries credentials"),
    ("{site}/other/a.png", "not allowed"),
    ("{site}/media/../private/a.png", "not allowed"),
    ("gopher://{host}/media", r"not an http\(s\) URL"),
])
def test_prefixes_compare_parsed_urls(env, public_site, url, message):
    env(input_url_allow=f"{public_site.url}/media/")
    url = url.format(site=public_site.url, host=public_site.url.split("//")[1])
    with pytest.raises(InvalidInputError, match=message):
        fetch_input(url, "f", refusal=public_here)


def test_http_errors_name_the_status(env, public_site):
    env(input_url_allow=f"{public_site.url}/media/")
    with pytest.raises(InvalidInputError, match="answered HTTP 404"):
        fetch_input(f"{public_site.url}/media/none", "f", refusal=public_here)
