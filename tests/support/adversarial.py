"""Strings that look like the start of a secret again and again, one per shape redaction looks for."""

from __future__ import annotations

#: shape → one repeat of its string: no digit and no end, so a pattern that scans ahead from every
#: start takes quadratic time on it (``"sk-" * 32000``, 96 KB, once froze a worker for 30 s).
ADVERSARIAL = {
    "sk- key": "sk-", "xai- key": "xai-", "github_pat": "github_pat_-", "slack xox": "xoxb--", "AWS AKIA": "AKIA",
    "Google AIza": "AIza!", "JWT": "eyJ-", "Bearer": "bearer -", "token": "token token", "Basic": "basic ",
    "URL userinfo": "://a:", "query secret": "?api_key=&", "key words": "AAAAa_",
}


def adversarial(shape: str, size: int) -> str:
    """``size`` characters of ``shape``'s string."""
    unit = ADVERSARIAL[shape]
    return (unit * (size // len(unit) + 1))[:size]
