"""Fetching a job's input asset from a URL: only where the operator allows it, never from this machine
or its networks, bounded in size and time, streamed into the blob store.

A job submitter is not trusted, so a URL in a job's input is a request the worker would make on their
behalf (server-side request forgery). The rules:

- the URL must start with one of the ``MEDIACONDUIT_INPUT_URL_ALLOW`` prefixes, compared as parsed URLs
  (``https://allowed.example@evil.example/`` is not ``https://allowed.example``) by scheme, host, port
  and whole decoded path segments, as the provider allow-list is (``…/public`` does not admit
  ``…/public-internal``); a segment that would step out once the server decodes it (``%2e%2e``,
  ``..%2f``, ``..;``, an encoded slash, double encoding) is refused outright; none by default;
- every address the host name resolves to must be public: not loopback, private, link-local (where
  cloud metadata services live), shared, multicast, reserved or unspecified, also when an IPv6 address
  wraps an IPv4 one. The socket then connects to an address that was checked, so a second DNS answer
  cannot swap in another (DNS rebinding);
- redirects are followed by hand, at most ``MAX_REDIRECTS``, and each hop is checked like the first;
- the body is capped (``MEDIACONDUIT_INPUT_URL_MAX_BYTES``), the whole download has a deadline
  (``MEDIACONDUIT_INPUT_URL_TIMEOUT``), nothing is decompressed, and no proxy from the environment is used.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import certifi
import httpcore
import httpx

from .blobs import BlobStore
from .errors import ConfigurationError, InvalidInputError
from .redaction import redact_url
from .settings import get_settings
from .sources.urls import UnsafeSegment, path_segments

MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Cloud metadata services (AWS/GCP/Azure, AWS over IPv6, Alibaba): named in errors.
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Refusal = Callable[[str], str | None]


def address_refusal(address: str) -> str | None:
    """Why the worker must not connect to ``address`` (``"loopback"``, ``"private"`` …), or None when it
    is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is no part of it
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # the socket reaches the IPv4 address itself
            reason = address_refusal(str(ip.ipv4_mapped))
            return f"{reason}, wrapped in {ip}" if reason else None
        wrapped = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if wrapped is None and ip in _NAT64:
            wrapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if wrapped is not None:  # a relay or translator would forward to it
            reason = address_refusal(str(wrapped))
            if reason:
                return f"{reason}, wrapped in {ip}"
    if ip in _METADATA:
        return "cloud metadata service"
    for reason, flagged in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("shared (carrier-grade NAT)", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    ):
        if flagged:
            return reason
    return None


class _Refused(Exception):
    """A host that resolves to an address the worker must not reach."""


class _CheckedBackend(httpcore.NetworkBackend):
    """Connects only to addresses that pass ``refusal``, and to the very address it checked."""

    def __init__(self, refusal: Refusal) -> None:
        self._inner = httpcore.SyncBackend()
        self._refusal = refusal

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            reason = self._refusal(address)
            if reason:
                shown = host if host == address else f"{host} (resolves to {address})"
                raise _Refused(f"{shown} is not a public address ({reason})")
        failure: Exception = httpcore.ConnectError(f"{host!r} has no address")
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise _Refused("unix sockets are not reachable from a job")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


Locator = tuple[str, str, int, tuple[str, ...]]
"""What the input-URL allow-list compares: scheme, host, port and the path's decoded segments."""


def _locator(url: httpx.URL) -> Locator:
    """``url`` as the allow-list compares it; raises ``UnsafeSegment`` for a path that could step out of
    a prefix once the server decodes it (httpx removes literal ``..`` itself, not ``%2e%2e`` or ``..%2f``)."""
    path = url.raw_path.decode("ascii").partition("?")[0]
    return url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme], tuple(path_segments(path))


def allowed_prefixes() -> tuple[Locator, ...]:
    return parse_prefixes(get_settings().input_url_allow or "", "MEDIACONDUIT_INPUT_URL_ALLOW")


@functools.lru_cache(maxsize=8)
def parse_prefixes(allow: str, setting: str) -> tuple[Locator, ...]:
    """An allow-list setting (comma-separated URL prefixes) parsed once per value; a malformed entry is named
    with its ``setting``."""
    out = []
    for entry in (e.strip() for e in allow.split(",")):
        if not entry:
            continue
        try:
            url = httpx.URL(entry)
            if url.scheme not in _DEFAULT_PORTS or not url.host or url.userinfo or url.query or url.fragment:
                raise ValueError("expected http(s)://HOST[:PORT][/PATH], without credentials, query or fragment")
            out.append(_locator(url))
        except (httpx.InvalidURL, ValueError) as exc:
            raise ConfigurationError(f"{setting} entry {entry!r} is malformed: {exc}") from None
    return tuple(out)


def _is_allowed(url: Locator, prefixes: tuple[Locator, ...]) -> bool:
    """Scheme, host and port equal, and the prefix's path segments the first of the URL's, whole."""
    return any(url[:3] == p[:3] and url[3][: len(p[3])] == p[3] for p in prefixes)


def fetch_input(url: str, where: str, store: BlobStore | None = None,
                refusal: Refusal = address_refusal) -> tuple[str, str, int, str | None]:
    """Download an input asset's URL into the blob store; (blob uri, sha256, size, content type).

    Every refusal is an ``InvalidInputError`` naming ``where`` (the job's field) and the URL as it may
    be shown. ``refusal`` is the address check (tests stand a loopback address in for a public one).
    """
    settings = get_settings()
    shown = redact_url(url)
    prefixes = allowed_prefixes()
    if not prefixes:
        raise InvalidInputError(
            f"{where}: URL {shown!r} is not accepted: this worker fetches no input URLs "
            "(MEDIACONDUIT_INPUT_URL_ALLOW is unset); send the bytes inline ('data') or as a blob:// reference"
        )
    deadline = time.monotonic() + settings.input_url_timeout
    context = ssl.create_default_context(cafile=certifi.where())
    try:
        with httpcore.ConnectionPool(ssl_context=context, network_backend=_CheckedBackend(refusal)) as pool:
            current = url
            for _hop in range(MAX_REDIRECTS + 1):
                target = _checked_url(current, prefixes, where)
                remaining = max(deadline - time.monotonic(), 0.001)
                with pool.stream("GET", httpcore.URL(scheme=target.raw_scheme, host=target.raw_host, port=target.port,
                                                     target=target.raw_path),
                                 headers=[(b"Host", target.netloc), (b"User-Agent", b"mediaconduit-worker"),
                                          (b"Accept-Encoding", b"identity")],
                                 extensions={"timeout": {"connect": min(remaining, 10.0), "read": remaining,
                                                         "write": remaining, "pool": remaining}}) as response:
                    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
                    if response.status in _REDIRECTS and "location" in headers:
                        current = str(target.join(headers["location"]))
                        continue
                    if response.status != 200:
                        raise InvalidInputError(f"{where}: GET {redact_url(str(target))} answered HTTP {response.status}")
                    limit = settings.input_url_max_bytes
                    if int(headers.get("content-length") or 0) > limit:
                        raise InvalidInputError(f"{where}: {redact_url(str(target))} is {int(headers['content-length']):,} "
                                                f"bytes, more than MEDIACONDUIT_INPUT_URL_MAX_BYTES allows ({limit:,})")
                    chunks = _bounded(response.iter_stream(), limit, deadline, where, str(target))
                    uri, digest, size = (store or BlobStore()).put_stream(chunks)
                    return uri, digest, size, headers.get("content-type", "").split(";")[0].strip() or None
    except _Refused as exc:
        raise InvalidInputError(f"{where}: {shown!r} is refused: {exc}; input URLs never reach this machine "
                                "or its networks") from None
    except httpcore.TimeoutException:
        raise InvalidInputError(f"{where}: {shown!r} took longer than MEDIACONDUIT_INPUT_URL_TIMEOUT "
                                f"({settings.input_url_timeout:g}s)") from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise InvalidInputError(f"{where}: cannot fetch {shown!r}: {type(exc).__name__}: {exc}") from None
    raise InvalidInputError(f"{where}: {shown!r} redirects more than {MAX_REDIRECTS} times")


class URLRefused(ValueError):
    """A URL that is not http(s), carries credentials, or is outside its allow-list; the message says which."""


def checked_url(url: str, prefixes: tuple[Locator, ...], setting: str, what: str) -> httpx.URL:
    """``url`` parsed, when it is an http(s) URL without credentials under one of ``prefixes`` (the value of
    ``setting``); ``URLRefused`` otherwise. ``what`` names the kind of URL in the message (``input URLs``)."""
    shown = redact_url(url)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise URLRefused(f"{shown!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise URLRefused(f"{shown!r} is not an http(s) URL")
    if parsed.userinfo:
        raise URLRefused(f"{shown!r} carries credentials; {what} may not")
    try:
        located = _locator(parsed)
    except UnsafeSegment as exc:
        raise URLRefused(f"{shown!r}: {exc}") from None
    if not _is_allowed(located, prefixes):
        raise URLRefused(f"{shown!r} is not allowed by {setting}")
    return parsed


def _checked_url(url: str, prefixes: tuple[Locator, ...], where: str) -> httpx.URL:
    try:
        return checked_url(url, prefixes, "MEDIACONDUIT_INPUT_URL_ALLOW", "input URLs")
    except URLRefused as exc:
        raise InvalidInputError(f"{where}: {exc}") from None


def _bounded(chunks: Iterable[bytes], limit: int, deadline: float, where: str, url: str) -> Iterator[bytes]:
    """The body, stopped with an ``InvalidInputError`` past the size cap or the deadline."""
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise InvalidInputError(f"{where}: {redact_url(url)} is larger than MEDIACONDUIT_INPUT_URL_MAX_BYTES "
                                    f"allows ({limit:,} bytes)")
        if time.monotonic() > deadline:
            raise httpcore.ReadTimeout("deadline")
        yield chunk
