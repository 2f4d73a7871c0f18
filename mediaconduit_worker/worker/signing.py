"""This installation's secret, and what is keyed with it: result-cache keys, batch headers, batch job ids.

Producers and workers of one installation share one secret: ``MEDIACONDUIT_INSTALLATION_SECRET`` when set
(set it on every machine of a deployment), else a random one created once in
``MEDIACONDUIT_HOME/installation-secret`` (mode 0600), which every process under that home reads. It
keys HMAC-SHA256 digests, each for one purpose (a digest made for one is never valid for another), so:
- a cache key depends on a job's secret option values without revealing them (``cache.py``);
- a worker charges a batch's budget only for jobs the batch's producer sent (``verified_batch``);
- a batch's job ids cannot be predicted from its content (``batch/api.py``).
The secret itself never leaves this module: not in results, logs, errors or Redis.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, MediaConduitError
from ..settings import get_settings
from .headers import BATCH_HEADER

SECRET_FILE = "installation-secret"
MIN_SECRET_CHARS = 16


def installation_secret() -> bytes:
    """The secret of this installation: the setting, else the file under the home (created on first use)."""
    settings = get_settings()
    value = settings.installation_secret.get_secret_value() if settings.installation_secret else ""
    if value:  # an empty value (compose passing an unset variable on) counts as unset
        if len(value) < MIN_SECRET_CHARS:
            raise MediaConduitError(f"MEDIACONDUIT_INSTALLATION_SECRET must be at least {MIN_SECRET_CHARS} characters")
        return value.encode()
    return _file_secret(settings.home)


@functools.lru_cache(maxsize=4)
def _file_secret(home: Path) -> bytes:
    """Read the home's secret file, creating it first if need be: written whole to a private temporary
    file, then hard-linked into place, so processes racing to create it all end up reading the one that
    won, never a partial one."""
    path = home / SECRET_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        temporary = home / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:  # another process created it first: use theirs
                pass
        finally:
            temporary.unlink()
    value = path.read_text(encoding="utf-8").strip()
    if len(value) < MIN_SECRET_CHARS:
        raise MediaConduitError(f"the installation secret file {path} is shorter than {MIN_SECRET_CHARS} characters; "
                                "delete it to make a new one, or set MEDIACONDUIT_INSTALLATION_SECRET")
    return value.encode()


def keyed_digest(purpose: str, text: str) -> str:
    """HMAC-SHA256 (hex) of ``text`` for ``purpose``, keyed with the installation secret."""
    return hmac.new(installation_secret(), purpose.encode() + b"\0" + text.encode(), hashlib.sha256).hexdigest()


def canonical(value: Any) -> str:
    """Stable JSON text of a JSON value: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _header_digest(header: dict[str, Any], task_id: str) -> str:
    body = {k: v for k, v in header.items() if k != "sig"}
    return keyed_digest("batch-header", canonical(body) + "\n" + task_id)


def sign_batch_header(batch_id: str, budget_usd: float | None, task_id: str) -> dict[str, Any]:
    """The batch header of the job ``task_id``, signed for it alone (a copied header fails on another job)."""
    header: dict[str, Any] = {"id": batch_id, "budget_usd": budget_usd}
    header["sig"] = _header_digest(header, task_id)
    return header


def verified_batch(header: Any, task_id: str) -> dict[str, Any]:
    """A job's batch header, once its signature is checked.

    A header this installation's producers did not sign for this job fails the job before anything is
    called or charged: it would spend another batch's budget.
    """
    problem = None
    if not isinstance(header, dict) or not isinstance(header.get("sig"), str):
        problem = "is not signed"
    elif not hmac.compare_digest(header["sig"], _header_digest(header, task_id)):
        problem = "has a signature this installation did not make for this job"
    if problem is not None:
        raise InvalidInputError(
            f"message header {BATCH_HEADER!r} {problem}: only a batch's producer may charge a job to its budget "
            "(producers and workers must share MEDIACONDUIT_INSTALLATION_SECRET or MEDIACONDUIT_HOME); nothing "
            "was called or charged")
    return header
