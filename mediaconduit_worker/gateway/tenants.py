"""Tenants and their API keys, in Redis: a key is shown once and only its SHA-256 is stored.

A tenant's webhooks are signed with its ``whsec_`` secret (Standard Webhooks: ``whsec_`` + 32 random bytes in
base64), made on first use and replaced by ``rotate_webhook_secret``; it is kept whole, since the gateway
signs with it, and is never logged or shown but by ``mediaconduit keys webhook-secret``.

A key is ``mck_`` + 32 random bytes (URL-safe base64). Its id (the first 12 hex digits of its hash) names
it in ``keys list`` and ``keys revoke`` without revealing it. A plain SHA-256 is enough here, unlike a
password: the key is random and long, so nothing can be guessed from its hash.

Redis keys (``docs/http.md``):
- ``mediaconduit:gateway:key:<sha256 of the key>``: hash ``{tenant, id, created}``;
- ``mediaconduit:gateway:tenant:<name>``: hash ``{name, created, budget_usd?, rpm?, webhook_secret?}``;
- ``mediaconduit:gateway:tenant:<name>:keys``: set of the key hashes of the tenant;
- ``mediaconduit:gateway:tenants``: set of tenant names.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

PREFIX = "mediaconduit:gateway"
KEY_PREFIX = "mck_"
SECRET_PREFIX = "whsec_"
#: A tenant's name: it appears in Redis keys and spend scopes, so no separators or spaces.
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


Redis = Any
"""A ``redis.Redis`` made with ``decode_responses=True``: its replies are ``str`` (redis-py's annotations say
``bytes | str`` whatever the client decodes, so they are not used here)."""


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key(digest: str) -> str:
    return f"{PREFIX}:key:{digest}"


def _tenant(name: str) -> str:
    return f"{PREFIX}:tenant:{name}"


@dataclass(frozen=True)
class Tenant:
    """Who a key belongs to, and what it may spend and send."""

    name: str
    budget_usd: float | None = None
    """USD all the tenant's jobs may spend together (None: unlimited), held by the workers (``worker/calls.py``)."""
    rpm: int | None = None
    """Jobs it may create per minute, cluster-wide (None: unlimited), counted in ``worker/limits.py``."""

    @property
    def spend_scope(self) -> str:
        """The id of the budget scope the tenant's jobs charge (sent in each job's signed batch header)."""
        return f"tenant:{self.name}"

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Tenant:
        budget, rpm = data.get("budget_usd"), data.get("rpm")
        return cls(data["name"], float(budget) if budget else None, int(rpm) if rpm else None)


class TenantError(ValueError):
    """A tenant name or key that cannot be used; the message names it."""


class KeyStore:
    """Create, look up, list and revoke keys, over one Redis client (``decode_responses=True``)."""

    def __init__(self, client: Redis) -> None:
        self.redis = client

    def create(self, tenant: str, budget_usd: float | None = None, rpm: int | None = None) -> tuple[Tenant, str, str]:
        """A new key for ``tenant`` (created, or its budget and rpm updated when given); returns
        (tenant, key, key id). The key itself is nowhere else afterwards."""
        if not TENANT_NAME.match(tenant):
            raise TenantError(f"tenant name {tenant!r} must be 1-64 letters, digits, '_', '.' or '-', starting "
                              "with a letter or digit")
        if budget_usd is not None and budget_usd < 0:
            raise TenantError(f"budget {budget_usd!r} must be at least 0")
        if rpm is not None and rpm < 1:
            raise TenantError(f"rpm {rpm!r} must be at least 1")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = key_hash(key)
        now = str(int(time.time()))
        fields: dict[str, Any] = {"name": tenant}
        if budget_usd is not None:
            fields["budget_usd"] = repr(float(budget_usd))
        if rpm is not None:
            fields["rpm"] = str(int(rpm))
        with self.redis.pipeline() as pipe:
            pipe.hsetnx(_tenant(tenant), "created", now)
            pipe.hset(_tenant(tenant), mapping=fields)
            pipe.sadd(f"{PREFIX}:tenants", tenant)
            pipe.sadd(f"{_tenant(tenant)}:keys", digest)
            pipe.hset(_key(digest), mapping={"tenant": tenant, "id": digest[:12], "created": now})
            pipe.hgetall(_tenant(tenant))
            *_, record = pipe.execute()
        return Tenant.from_hash(record), key, digest[:12]

    def lookup(self, key: str) -> Tenant | None:
        """The tenant of a key, or None for an unknown or revoked one (one round trip)."""
        if not key.startswith(KEY_PREFIX):
            return None
        return self.lookup_hash(key_hash(key))

    def lookup_hash(self, digest: str) -> Tenant | None:
        """The tenant of the key whose SHA-256 is ``digest`` (a browser session keeps only that), or None."""
        tenant = self.redis.hget(_key(digest), "tenant")
        if tenant is None:
            return None
        record = self.redis.hgetall(_tenant(tenant))
        return Tenant.from_hash(record) if record else None

    def webhook_secret(self, name: str, rotate: bool = False) -> str:
        """The tenant's ``whsec_`` secret its webhooks are signed with: made on first use, a new one with
        ``rotate`` (deliveries from then on, retries included, are signed with it)."""
        if not rotate and (held := self.redis.hget(_tenant(name), "webhook_secret")):
            return str(held)  # one read for every delivery's signature
        if not self.redis.exists(_tenant(name)):
            raise TenantError(f"no tenant {name!r} (`mediaconduit keys create --tenant {name}` makes it)")
        fresh = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
        if rotate:
            self.redis.hset(_tenant(name), "webhook_secret", fresh)
            return fresh
        self.redis.hsetnx(_tenant(name), "webhook_secret", fresh)
        secret: str = self.redis.hget(_tenant(name), "webhook_secret")
        return secret

    def tenant(self, name: str) -> Tenant | None:
        record = self.redis.hgetall(_tenant(name))
        return Tenant.from_hash(record) if record else None

    def rows(self) -> list[dict[str, Any]]:
        """Every key: tenant, key id, created (epoch seconds), the tenant's budget and rpm."""
        rows: list[dict[str, Any]] = []
        for name in sorted(self.redis.smembers(f"{PREFIX}:tenants")):
            tenant = self.tenant(name)
            for digest in sorted(self.redis.smembers(f"{_tenant(name)}:keys")):
                created = self.redis.hget(_key(digest), "created")
                rows.append({"tenant": name, "key_id": digest[:12], "created": int(created or 0),
                             "budget_usd": tenant.budget_usd if tenant else None, "rpm": tenant.rpm if tenant else None})
        return rows

    def revoke(self, key_or_id: str) -> list[str]:
        """Revoke a key, given whole or by its id (or a tenant's every key, by ``tenant:NAME``); the ids revoked."""
        if key_or_id.startswith(KEY_PREFIX):
            digests = [key_hash(key_or_id)] if self.redis.exists(_key(key_hash(key_or_id))) else []
        elif key_or_id.startswith("tenant:"):
            digests = sorted(self.redis.smembers(f"{_tenant(key_or_id[7:])}:keys"))
        else:
            digests = [d for name in self.redis.smembers(f"{PREFIX}:tenants")
                       for d in self.redis.smembers(f"{_tenant(name)}:keys") if d.startswith(key_or_id)]
            if len(key_or_id) < 6 or len(digests) > 1:
                raise TenantError(f"key id {key_or_id!r} is ambiguous: give at least 6 characters of one key's id")
        for digest in digests:
            tenant = self.redis.hget(_key(digest), "tenant")
            with self.redis.pipeline() as pipe:
                pipe.delete(_key(digest))
                if tenant:
                    pipe.srem(f"{_tenant(tenant)}:keys", digest)
                pipe.execute()
        return [d[:12] for d in digests]
