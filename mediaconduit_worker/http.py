"""The HTTP layer remote providers share: auth, timeouts, retries that honour Retry-After, clear errors.

Why one layer: every API provider needs the same failure policy. A 429 or 5xx is retried a few
times here (short waits only), then surfaces as ``TransientError(retry_after=...)`` so the Celery
task retries later without holding a worker slot. Anything else is a permanent
``ProviderHTTPError`` naming the provider, the request and the API's own message. Secrets the
client was given are scrubbed from every message it produces.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .deadline import current_deadline, cut, time_left
from .errors import ProviderHTTPError, ProviderResponseError, TransientError
from .redaction import REDACTED

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
"""Statuses worth another try: rate limits, overload (Anthropic's 529) and gateway trouble."""
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key", "xi-api-key", "api-key"})
"""Headers that carry credentials: a redirect to another origin never gets them (nor a client's own auth headers)."""
MAX_REDIRECTS = 10

_fail_fast: ContextVar[bool] = ContextVar("mediaconduit_http_fail_fast", default=False)


@contextmanager
def fail_fast() -> Iterator[None]:
    """Within this block clients raise ``TransientError`` at the first 429/5xx/unreachable instead of
    retrying inline: a route has another candidate to try at once (per thread, via a context variable)."""
    token = _fail_fast.set(True)
    try:
        yield
    finally:
        _fail_fast.reset(token)


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``; None if absent."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def api_error_message(body: Any) -> str | None:
    """The human message inside the error bodies of the APIs we speak (OpenAI, Anthropic, Ollama, FastAPI, ...)."""
    if isinstance(body, str):
        return body.strip()[:500] or None
    if not isinstance(body, dict):
        return None
    for key in ("error", "detail"):
        inner = body.get(key)
        if isinstance(inner, str) and inner:
            return inner
        if isinstance(inner, dict):
            msg = inner.get("message") or inner.get("msg") or inner.get("status")
            kind = inner.get("type") or inner.get("code")
            if msg:
                return f"{kind}: {msg}" if isinstance(kind, str) and kind and kind not in str(msg) else str(msg)
        if isinstance(inner, list) and inner:
            first = inner[0]
            return str(first.get("msg") if isinstance(first, dict) else first)
    msg = body.get("message")
    return str(msg) if msg else None


def _body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class HttpClient:
    """One API's endpoint: base URL, auth headers (sent only to that base URL), timeouts and retries."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        auth_headers: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: list[str] | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_inline_wait: float = 10.0,
        auth_hint: str | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_inline_wait = max_inline_wait
        self.auth_hint = auth_hint
        self._auth = dict(auth_headers or {})
        self._credential_headers = CREDENTIAL_HEADERS | {name.lower() for name in self._auth}
        # The raw key as well as the header value ("Bearer <key>"): APIs echo the key alone.
        found = [s for s in (secrets or []) if s]
        for value in self._auth.values():
            found += [value, value.split(" ", 1)[-1]]
        self._secrets = sorted({s for s in found if len(s) >= 6}, key=len, reverse=True)
        sent = {"User-Agent": "mediaconduit-worker", **dict(headers or {})}
        self._clients = _ClientPool(lambda ssl: httpx.Client(
            headers=sent, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), verify=ssl,
            follow_redirects=False,  # followed by _follow, which drops credentials on a cross-origin hop
        ))

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"<HttpClient {self.provider} {self.base_url}>"

    def close(self) -> None:
        self._clients.close()

    # -- public calls ---------------------------------------------------------------------------
    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request_json("GET", path, **kwargs)

    def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request_json("POST", path, json=body, **kwargs)

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body; malformed JSON is a clear ``ProviderResponseError``."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            snippet = response.text[:200]
            raise ProviderResponseError(self.scrub(
                f"{self.provider}: {method} {self._show(path)} returned malformed JSON "
                f"(HTTP {response.status_code}, {response.headers.get('content-type', 'no content-type')}): "
                f"{exc}; body starts {snippet!r}"
            )) from None

    def request_bytes(self, method: str, path: str, **kwargs: Any) -> tuple[bytes, str]:
        """Raw body and its content type (audio, images)."""
        response = self.request(method, path, **kwargs)
        return response.content, response.headers.get("content-type", "application/octet-stream").split(";")[0]

    def download(self, url: str) -> tuple[bytes, str]:
        """A file the API pointed us at (e.g. a generated image URL); auth goes only to the API's own host."""
        return self.request_bytes("GET", url)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        content: bytes | Iterable[bytes] | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Send with retries; a successful (2xx/3xx) response, or an error as described in the module doc.

        ``content`` (a raw body) and ``files`` (multipart) are bytes, so a retry sends them again as is;
        a streamed ``content`` must be re-iterable (``media.FileBody``) for the same reason.
        """
        with self._clients.lease() as client:
            return self._send(client, method, path, json=json, params=params, headers=headers, timeout=timeout,
                              stream=False, content=content, files=files)

    def open_stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                    headers: Mapping[str, str] | None = None, timeout: float | None = None,
                    content: bytes | Iterable[bytes] | None = None, json: Any = None) -> httpx.Response:
        """As ``request``, but the body is left unread for ``iter_bytes()`` (large media); close it after."""
        client = self._clients.take()
        try:
            response = self._send(client, method, path, json=json, params=params, headers=headers, timeout=timeout,
                                  stream=True, content=content)
        except BaseException:
            self._clients.give(client)
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _GivesBack(response.stream, lambda: self._clients.give(client))
        return response

    def stream_ndjson(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
        what: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Objects of a newline-delimited JSON stream; a line carrying ``error`` ends it with a clear error."""
        with self._clients.lease() as client:
            yield from self._stream_ndjson(client, method, path, json, timeout, what)

    def _stream_ndjson(self, client: httpx.Client, method: str, path: str, json: Any, timeout: float | None,
                       what: str | None) -> Iterator[dict[str, Any]]:
        response = self._send(client, method, path, json=json, params=None, headers=None, timeout=timeout, stream=True)
        label = what or f"{method} {self._show(path)}"
        try:
            for line in response.iter_lines():
                if (d := current_deadline()) is not None and d.remaining() <= 0:
                    raise d.error(label)
                if not line.strip():
                    continue
                try:
                    item = _json_loads(line)
                except ValueError as exc:
                    raise ProviderResponseError(self.scrub(
                        f"{self.provider}: {label} streamed a malformed JSON line: {exc}; line {line[:200]!r}"
                    )) from None
                if isinstance(item, dict) and item.get("error"):
                    raise ProviderResponseError(self.scrub(
                        f"{self.provider}: {label} failed: {api_error_message(item) or item['error']}"
                    ))
                if not isinstance(item, dict):
                    raise ProviderResponseError(self.scrub(f"{self.provider}: {label} streamed a non-object line {line[:200]!r}"))
                yield item
        except httpx.TimeoutException:
            if (d := current_deadline()) is not None and d.remaining() <= 0.1:  # the read timeout was the time left
                raise d.error(label) from None
            raise TransientError(self.scrub(f"{self.provider}: {label} stalled (no data for {self._timeout(timeout)}s)")) from None
        except httpx.TransportError as exc:
            raise TransientError(self.scrub(f"{self.provider}: {label} stream broke: {type(exc).__name__}: {exc}")) from None
        finally:
            response.close()

    def stream_sse(self, method: str, path: str, *, json: Any = None, timeout: float | None = None,
                   what: str | None = None, end_event: str | None = None,
                   transient: Collection[str] = ()) -> Iterator[dict[str, Any]]:
        """The JSON objects of a server-sent event stream's ``data:`` lines, up to ``data: [DONE]`` or, with
        ``end_event``, up to and including the event of that name (Anthropic's ``message_stop``). An error in
        the stream (an ``error`` object, or ``event: error``), a malformed line, or a stream that ends before its
        end is an error naming the provider; a connection that breaks or stalls is a ``TransientError``, and so
        is an error whose ``type`` is in ``transient`` (Anthropic's ``overloaded_error``: worth another try)."""
        with self._clients.lease() as client:
            yield from self._stream_sse(client, method, path, json, timeout, what, end_event, frozenset(transient))

    def _stream_sse(self, client: httpx.Client, method: str, path: str, json: Any, timeout: float | None,
                    what: str | None, end_event: str | None, transient: frozenset[str]) -> Iterator[dict[str, Any]]:
        response = self._send(client, method, path, json=json, params=None, headers=None, timeout=timeout, stream=True)
        label = what or f"{method} {self._show(path)}"
        end = end_event or "[DONE]"
        event = ""
        try:
            for line in response.iter_lines():
                if (d := current_deadline()) is not None and d.remaining() <= 0:
                    raise d.error(label)
                if line.startswith("event:"):
                    event = line[6:].strip()
                    continue
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, id: and retry: fields
                data = line[5:].strip()
                if data == "[DONE]" and end_event is None:
                    return
                try:
                    item = _json_loads(data)
                except ValueError as exc:
                    raise ProviderResponseError(self.scrub(
                        f"{self.provider}: {label} streamed a malformed event: {exc}; data {data[:200]!r}")) from None
                if event == "error" or (isinstance(item, dict) and item.get("error")):
                    message = self.scrub(f"{self.provider}: {label} failed mid-stream: "
                                         f"{api_error_message(item) or data[:200]}")
                    inner = item.get("error") if isinstance(item, dict) else None
                    if isinstance(inner, dict) and inner.get("type") in transient:
                        raise TransientError(message)
                    raise ProviderResponseError(message)
                if not isinstance(item, dict):
                    raise ProviderResponseError(self.scrub(f"{self.provider}: {label} streamed a non-object event "
                                                           f"{data[:200]!r}"))
                ended, event = event == end_event, ""
                yield item
                if ended:
                    return
        except httpx.TimeoutException:
            if (d := current_deadline()) is not None and d.remaining() <= 0.1:
                raise d.error(label) from None
            raise TransientError(self.scrub(f"{self.provider}: {label} stalled (no data for {self._timeout(timeout)}s)")) from None
        except httpx.TransportError as exc:
            raise TransientError(self.scrub(f"{self.provider}: {label} stream broke: {type(exc).__name__}: {exc}")) from None
        finally:
            response.close()
        raise TransientError(self.scrub(f"{self.provider}: {label} stream ended before its {end}"))

    def scrub(self, text: str) -> str:
        """``text`` with every secret this client holds replaced."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    # -- internals ------------------------------------------------------------------------------
    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _url(self, path: str) -> tuple[str, bool]:
        """Absolute URL and whether it is the API's own (only then does it get the auth headers)."""
        if path.startswith(("http://", "https://")):
            own = path == self.base_url or path.startswith(self.base_url + "/")
            return path, own
        return f"{self.base_url}/{path.lstrip('/')}", True

    def _show(self, path: str) -> str:
        return path.split("?")[0]

    def _can_wait(self, delay: float) -> bool:
        """Whether an in-process retry after ``delay`` fits the job's deadline (else the queue retries it)."""
        left = time_left()
        return left is None or delay < left

    def _past_deadline(self, during: str) -> Exception:
        d = current_deadline()
        assert d is not None
        return d.error(self.scrub(during))

    def _follow(self, client: httpx.Client, response: httpx.Response, stream: bool, label: str) -> httpx.Response:
        """Follow redirects; a hop to another origin (scheme, host or port) loses every credential header,
        so a key is never handed to a host the API (or whoever controls its redirects) points at."""
        hops = 0
        while (hop := response.next_request) is not None:
            response.close()
            if hops == MAX_REDIRECTS:
                raise ProviderResponseError(self.scrub(f"{self.provider}: {label} redirected more than {MAX_REDIRECTS} times"))
            if _origin(hop.url) != _origin(response.request.url):
                for name in self._credential_headers:
                    hop.headers.pop(name, None)
            response = client.send(hop, stream=stream)
            hops += 1
        return response

    def _delay(self, attempt: int) -> float:
        base = min(self.backoff * (2 ** attempt), self.max_backoff)
        return base * (0.8 + 0.4 * random.random())

    def _send(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        timeout: float | None,
        stream: bool,
        content: bytes | Iterable[bytes] | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        url, own = self._url(path)
        sent_headers = {**(self._auth if own else {}), **dict(headers or {})}
        label = f"{method} {self._show(path)}"
        max_retries = 0 if _fail_fast.get() else self.max_retries
        attempt = 0
        while True:
            # Never longer than the job has left (deadline.py): a hung API ends with the job's time limit.
            wait, by_deadline = cut(self._timeout(timeout), label)
            request = client.build_request(
                method, url, json=json, params=params, headers=sent_headers, content=content, files=files,
                timeout=httpx.Timeout(wait, connect=min(wait, 10.0)),
            )
            try:
                response = self._follow(client, client.send(request, stream=stream), stream, label)
            except httpx.TimeoutException:
                if by_deadline:
                    raise self._past_deadline(label) from None
                # The full timeout has already been spent: let the task retry later instead.
                raise TransientError(self.scrub(f"{self.provider}: {label} timed out after {wait:g}s")) from None
            except httpx.TransportError as exc:
                message = self.scrub(f"{self.provider}: cannot reach {self.base_url} ({label}): {type(exc).__name__}: {exc}")
                delay = self._delay(attempt)
                if attempt < max_retries and self._can_wait(delay):
                    log.warning("%s; retrying in %.1fs (%d/%d)", message, delay, attempt + 1, max_retries)
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise TransientError(message, retry_after=delay) from None
            if response.is_success or response.is_redirect:
                return response
            if stream:
                response.read()
                response.close()
            body = _body_of(response)
            api_message = api_error_message(body)
            message = self.scrub(
                f"{self.provider}: {label} failed with HTTP {response.status_code} {response.reason_phrase}"
                + (f": {api_message}" if api_message else "")
            )
            if response.status_code in RETRY_STATUSES:
                retry_after = parse_retry_after(response.headers)
                delay = retry_after if retry_after is not None else self._delay(attempt)
                if attempt < max_retries and delay <= self.max_inline_wait and self._can_wait(delay):
                    log.warning("%s; retrying in %.1fs (%d/%d)", message, delay, attempt + 1, max_retries)
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise TransientError(message, retry_after=delay, status=response.status_code)
            if response.status_code in (401, 403) and self.auth_hint:
                message += f" ({self.auth_hint})"
            raise ProviderHTTPError(message, status=response.status_code, api_message=self.scrub(api_message or ""))


class _ClientPool:
    """httpx clients lent out one per request in flight. A single shared client would do, but httpx's pool
    rescans all its connections on every request and response (quadratically): with an I/O pool's 128
    requests in flight that costs more CPU than the jobs themselves. Clients share one TLS context."""

    def __init__(self, make: Callable[[ssl.SSLContext], httpx.Client]) -> None:
        self._make = make
        self._ssl: ssl.SSLContext | None = None
        self._idle: list[httpx.Client] = []
        self._all: list[httpx.Client] = []
        self._lock = threading.Lock()

    def take(self) -> httpx.Client:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            client = self._make(self._ssl)
            self._all.append(client)
            return client

    def give(self, client: httpx.Client) -> None:
        with self._lock:
            self._idle.append(client)

    @contextmanager
    def lease(self) -> Iterator[httpx.Client]:
        client = self.take()
        try:
            yield client
        finally:
            self.give(client)

    def close(self) -> None:
        with self._lock:
            clients, self._all, self._idle = self._all, [], []
        for client in clients:
            client.close()


class _GivesBack(httpx.SyncByteStream):
    """An open response's body that hands its client back to the pool when the response is closed."""

    def __init__(self, inner: httpx.SyncByteStream, give_back: Callable[[], None]) -> None:
        self._inner = inner
        self._give_back: Callable[[], None] | None = give_back

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            give_back, self._give_back = self._give_back, None
            if give_back is not None:
                give_back()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _json_loads(line: str) -> Any:
    """Module-level so methods whose ``json=`` argument shadows the module can still decode."""
    return json.loads(line)
