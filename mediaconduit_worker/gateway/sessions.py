"""Browser sessions of the job pages (``pages.py``): a browser cannot send ``Authorization: Bearer`` when it
follows a link, so a tenant signs in once with its key and gets a session cookie instead.

The cookie holds a random token, never the key: Redis keeps the token's SHA-256 and the key's (the key
itself is nowhere), so a revoked key ends its sessions at their next request, and signing out ends one
at once. The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page or
link sends it), ``Path=/`` and, on HTTPS, ``Secure``. Only the pages read it: the ``/v1`` API takes bearer
keys alone, so no cross-site request can ride a browser's session on the API.

Redis key (``docs/http.md``): ``mediaconduit:gateway:session:<sha256 of the token>``, a hash ``{key, tenant,
created}`` (``key`` is the key's SHA-256), expiring ``SESSION_TTL`` seconds after sign-in.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from .tenants import PREFIX, KeyStore, Redis, Tenant, key_hash

COOKIE = "mediaconduit_session"
SESSION_TTL = 8 * 3600
"""Seconds a session lasts from sign-in (the cookie's ``Max-Age`` too)."""


def _session_key(token: str) -> str:
    return f"{PREFIX}:session:{hashlib.sha256(token.encode()).hexdigest()}"


def start(client: Redis, key: str, tenant: Tenant) -> str:
    """A new session of ``tenant``, signed in with ``key`` (already checked): its token, for the cookie."""
    token = secrets.token_urlsafe(32)
    with client.pipeline() as pipe:
        pipe.hset(_session_key(token), mapping={"key": key_hash(key), "tenant": tenant.name,
                                                "created": str(int(time.time()))})
        pipe.expire(_session_key(token), SESSION_TTL)
        pipe.execute()
    return token


def tenant_of(client: Redis, keys: KeyStore, token: str | None) -> Tenant | None:
    """The tenant of a session token, or None: no token, an unknown or expired session, or its key revoked."""
    if not token or len(token) > 100:
        return None
    digest = client.hget(_session_key(token), "key")
    return keys.lookup_hash(digest) if digest else None


def end(client: Redis, token: str | None) -> None:
    if token and len(token) <= 100:
        client.delete(_session_key(token))
