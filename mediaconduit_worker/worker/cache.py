"""Opt-in result cache: an identical job of a deterministic model is answered from Redis, and identical
jobs in flight at once make one provider call.

A job is cached when its options say ``cache: true``, or its model's manifest entry says ``cache: true``
and the options do not say ``cache: false``. The key is an HMAC-SHA256, keyed with the installation
secret (``signing.py``), over what decides the output: the provider (manifest id and pinned commit, or
package version; a Docker provider's service commit too), the model, every option but ``cache`` with its
value (secret ones too: a job with another credential never shares an entry, and ``key: "C major"`` is
not ``key: "D minor"``), and the input's content (text; media by blob digest; a chained input by its
content, not its history). Keyed, the key shown in a result tells nothing about a credential to anyone
who guesses one. A result that contains an option's secret value is not stored, and a hit does not name
the job that computed it (another submitter's).

Single flight: the first of identical jobs claims the key (``SET NX`` with a lease its worker renews while
the job runs); the others wait for its result, woken through a Redis list, and one of them takes the
claim over if the owner fails or its worker dies (the lease then expires). Entries live
``MEDIACONDUIT_CACHE_TTL`` seconds; ``mediaconduit cache stats | clear`` manage them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from celery import signals

from ..assets import BinaryAsset, Text, map_input
from ..errors import InvalidInputError
from ..provider import DockerProvider
from ..record import ResultBuilder
from ..redaction import secret_values
from ..settings import get_settings
from ..sources import SourceCache, parse_source
from .deadlines import JobDeadline
from .keeper import keeper
from .loader import LoadedProvider
from .lua_scripts import named, register
from .redis_state import state_redis
from .replay import pinned_service_url
from .signing import canonical, keyed_digest

log = logging.getLogger(__name__)
PREFIX = "mediaconduit-cache:"
CLAIM_PREFIX = "mediaconduit-cache-claim:"
WAKE_PREFIX = "mediaconduit-cache-wake:"
STATS_KEY = "mediaconduit-cache-stats"
#: A claim lapses this long after its worker stopped renewing it (``keeper.py`` renews it every third of it).
LEASE_MS = 15_000
KEY_VERSION = 2



def input_content(value: Any) -> Any:
    """What of an input decides a model's output: text (a plain string and a ``Text`` alike), a media
    asset's blob digest and type, lists of those; never metadata or generation prompts (a chain's history)."""
    return map_input(value, _content)


def _content(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"text": value, "language": "auto"}
    if isinstance(value, Text):
        return {"text": value.content, "language": value.language}
    if isinstance(value, BinaryAsset):
        uri = urlparse(value.uri or "")
        # A blob:// name is the digest of its bytes; any other reference is hashed as read.
        digest = uri.path.rsplit("/", 1)[-1] if uri.scheme == "blob" else hashlib.sha256(value.data).hexdigest()
        return {"type": value.type, "sha256": digest, "mime_type": value.mime_type}
    raise InvalidInputError(f"cannot cache an input of type {type(value).__name__}")


def service_code(loaded: LoadedProvider) -> str | None:
    """A Docker provider's output also depends on its service's code: the commit its service URL is pinned
    to (or the one a replay pins this job to); None for other providers."""
    provider = loaded.provider
    if not isinstance(provider, DockerProvider):
        return None
    url = pinned_service_url(provider.get_service_url())
    return SourceCache().materialise(parse_source(url)).commit or "unversioned"


def cache_key(loaded: LoadedProvider, model: str, options: dict[str, Any], model_input: Any) -> str | None:
    """The key of a job (hex HMAC-SHA256), or None when the provider's code has no fixed identity (an
    unversioned folder)."""
    code = loaded.checkout.commit or loaded.checkout.version
    service = service_code(loaded)
    if not code or service == "unversioned":
        return None
    material = {"v": KEY_VERSION, "provider": loaded.manifest.id, "code": code, "service": service, "model": model,
                "options": {k: v for k, v in options.items() if k != "cache"}, "input": input_content(model_input)}
    return keyed_digest("cache-key", canonical(material))


@dataclass
class Claim:
    """This worker computes ``key`` for the job ``task_id``; ``secrets`` must not appear in what it stores."""

    key: str
    task_id: str
    secrets: list[str]
    client: Any
    """The state Redis (``redis_state.py``), where the claim and the result live."""


_claims: dict[str, Claim] = {}
_claims_lock = threading.Lock()


def lookup(request: Any, deadline: JobDeadline, loaded: LoadedProvider, model: str, options: dict[str, Any],
           model_input: Any, started: float) -> dict[str, Any] | None:
    """The cached result for this job (marked as a hit), or None: run the provider, then ``store``.

    Waits while an identical job runs elsewhere, within the job's deadline.
    """
    key = cache_key(loaded, model, options, model_input)
    if key is None:
        log.warning("provider %s has no pinned commit or version: job %s is not cached", loaded.manifest.id, deadline.task_id)
        return None
    client = state_redis()
    task_id = deadline.task_id
    waited = False
    while True:
        raw = client.get(PREFIX + key)
        if raw is not None:
            client.hincrby(STATS_KEY, "hits")
            return _answer(json.loads(raw), key, request, started)
        if client.set(CLAIM_PREFIX + key, task_id, nx=True, px=LEASE_MS):
            with client.pipeline(transaction=False) as pipe:
                pipe.delete(WAKE_PREFIX + key)  # a wake-up left by an earlier owner must not make us spin
                pipe.hincrby(STATS_KEY, "misses")
                pipe.execute()
            _hold(Claim(key, task_id, secret_values(options), client))
            return None
        if not waited:
            waited = True
            client.hincrby(STATS_KEY, "waits")
        left = deadline.remaining()
        if left is not None and left <= 0:
            assert deadline.deadline is not None
            raise deadline.deadline.error("waiting for an identical job's result")
        if client.blpop([WAKE_PREFIX + key], timeout=min(1.0, left or 1.0)):
            client.rpush(WAKE_PREFIX + key, "1")  # pass the wake-up on to the next waiter


def _answer(entry: dict[str, Any], key: str, request: Any, started: float) -> dict[str, Any]:
    """A stored result (of either record format) as this job's, in record format 2."""
    return ResultBuilder.again(
        entry["result"], task_id=request.id, worker=request.hostname,
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
        cache={"hit": True, "key": key},
    )


def claimed_key(task_id: str) -> str | None:
    """The key this job computes for the cache, when it holds the claim."""
    with _claims_lock:
        claim = _claims.get(task_id)
    return claim.key if claim is not None else None


def store(task_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """Store the result of a job that holds a claim (unless it contains a secret) and wake its waiters."""
    with _claims_lock:
        claim = _claims.pop(task_id, None)
    if claim is None:
        return result
    text = json.dumps({"result": result, "stored_at": time.time()})
    if any(secret in text for secret in claim.secrets):
        log.warning("job %s: not cached, its result contains a secret option's value", claim.task_id)
    else:
        with claim.client.pipeline(transaction=False) as pipe:
            pipe.set(PREFIX + claim.key, text, ex=max(1, get_settings().cache_ttl))
            pipe.hincrby(STATS_KEY, "stores")
            pipe.execute()
    _release(claim)
    return result


def _lease_name(claim: Claim) -> str:
    return f"cache claim {claim.key[:12]} of job {claim.task_id}"


def _hold(claim: Claim) -> None:
    """Keep the claim while the job runs (``keeper.py`` renews it every third of ``LEASE_MS``)."""
    with _claims_lock:
        _claims[claim.task_id] = claim
    keeper.hold(_lease_name(claim), LEASE_MS / 1000, functools.partial(_renew, claim))


def _renew(claim: Claim) -> bool:
    renew = register(claim.client, "cache_renew")
    return bool(renew(keys=[CLAIM_PREFIX + claim.key], args=[named(owner=claim.task_id, lease_ms=LEASE_MS)]))


def _release(claim: Claim) -> None:
    keeper.drop(_lease_name(claim))
    client = claim.client
    try:
        register(client, "cache_release")(keys=[CLAIM_PREFIX + claim.key], args=[named(owner=claim.task_id)])
        with client.pipeline(transaction=False) as pipe:
            pipe.rpush(WAKE_PREFIX + claim.key, "1")
            pipe.expire(WAKE_PREFIX + claim.key, 60)
            pipe.execute()
    except Exception as exc:  # the lease lapses by itself; waiters then take over
        log.warning("releasing cache claim %s failed: %s", claim.key[:12], exc)


@signals.task_postrun.connect
def _release_unfinished(task_id: str | None = None, **_: Any) -> None:
    """A job that failed or went back to the queue gives its claim up: a waiting identical job takes it."""
    with _claims_lock:
        claim = _claims.pop(task_id or "", None)
    if claim is not None:
        _release(claim)
