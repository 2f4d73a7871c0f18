"""What keeps secrets out of everything stored or shown: records, the backend, logs, errors, URLs.

Two nets catch a secret: its key name (``api_key``, ``openai_key``, ``password``, ``cookie``, ``dsn`` ...)
or its shape (``sk-…``, ``AKIA…``, a JWT, ``Bearer …``, ``user:pass@`` in a URL, ``?api_key=…``). A leaf
of the SDK: the HTTP client, the fetcher and the records all use it, so it imports only ``errors``.
"""

from __future__ import annotations

import base64
import copy
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .errors import ProviderExecutionError

REDACTED = "[REDACTED]"


#: Whole words of a key name that mark its value as a secret, and their plurals (``tokens``,
#: ``access_tokens``, ``passwords``; "passes" is no plural of "pass").
_SECRET_WORDS = frozenset({
    "token", "secret", "password", "passwd", "pass", "pwd", "passphrase", "passcode", "auth", "authorization",
    "credential", "cookie", "session", "dsn", "apikey", "bearer", "signature", "jwt",
})
#: Words that are secrets only ending a name, or before ``code``/``number``: ``pin``, ``user_pin``,
#: ``otp_code`` are; ``pin_memory`` (a PyTorch loader setting) is not.
_LAST_SECRET_WORDS = frozenset({"pin", "otp", "totp"})
#: Words that make a name with a plural secret word a count: ``max_tokens``, ``prompt_tokens`` (usage
#: as APIs report it), ``tokens_per_minute``, ``num_sessions``. Singular names stay secrets.
_COUNTING_WORDS = frozenset({
    "max", "min", "num", "number", "total", "per", "prompt", "completion", "input", "output", "new", "cached",
    "reasoning", "thinking", "budget", "generated", "context", "remaining", "used",
})
#: Secret words run together in one word (``sessionid``, ``accesstoken``, ``privatekey``).
_SECRET_COMPOUNDS = ("apikey", "privatekey", "connectionstring", "sessionid", "accesstoken", "authtoken",
                     "refreshtoken", "password")
#: A last word that makes the key describe a secret rather than hold one (``token_count``, ``auth_type``).
_DESCRIBING_WORDS = frozenset({"count", "limit", "length", "size", "type", "mode", "method", "version", "enabled"})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

# Secret shapes, found wherever they stand in a string. Every pattern runs in time linear in the
# string: a job may hold 8 MiB of text made to look like the start of a secret (``"sk-" * n``), and a
# pattern that scanned ahead again from each such start (a lookahead, or a run that must be followed
# by something) took quadratic time, about 30 s for 96 KB. So no pattern fails after a long scan from
# a start that a later start shares: each either consumes the run it scanned (and the check after it
# decides) or scans only what no other start will; possessive runs (``*+``) give nothing back.
#
# Each pattern starts with a literal, so ``re`` skips to its next occurrence at the speed of
# ``str.find``; a leading ``\b`` would make it try every position, so the word-start check follows the
# literal (``(?<!\w.{n})``: no word character before the literal's ``n`` characters). Each pattern is
# its own pass: a match its check refuses cannot hide another shape inside it.

#: Secret wherever they match.
_ALWAYS = [re.compile(p) for p in (
    r"github_pat_(?<!\w.{11})[A-Za-z0-9_]{8,}",
    r"xox[abeoprs]-(?<!\w.{5})[A-Za-z0-9\-]{8,}",                # Slack
    r"AKIA(?<!\w.{4})[0-9A-Z]{16}\b", r"ASIA(?<!\w.{4})[0-9A-Z]{16}\b",   # AWS access key ids
    r"AIza(?<!\w.{4})[0-9A-Za-z_\-]{30,}",                      # Google API key
)]
#: Authorization values, matched in the lower-cased text (a case-blind pattern has no literal to skip
#: to). ``bearer``/``token`` values need a digit, so prose ("unexpected token somewhere") is kept;
#: that lookahead scans only the value after the word. ``basic`` values are secrets when they decode
#: to ``user:password`` ("a basic principle" is kept).
_AUTHORIZATION = [re.compile(p + r"\s++(?=[a-z+/=_\-.~]*+\d)[a-z0-9+/=_\-.~]{8,}")
                  for p in (r"bearer(?<!\w.{6})", r"token(?<!\w.{5})")]
_BASIC = re.compile(r"basic(?<!\w.{5})\s++(?P<basic>[a-z0-9+/]{6,}+={0,2})")
#: Prefixed keys (OpenAI, Anthropic, Stripe, xAI, Hugging Face, GitHub, GitLab, npm, PyPI), one pass
#: each. A match runs to the end of its run of key characters and is a secret when ``rest`` holds a
#: digit, so names ("xai-provider", "sk-learn-pipeline") are kept. A later start of the same prefix in
#: that run could only match a part of it, so consuming the run loses nothing.
_PREFIXED = [re.compile(rf"{p}(?<!\w.{{{len(p)}}})[-_](?P<rest>[A-Za-z0-9_\-]{{8,}})")
             for p in ("sk", "rk", "xai", "hf", "ghp", "gho", "ghu", "ghs", "ghr", "glpat", "npm", "pypi")]
#: A JWT's second and third parts (``.eyJ….…``); its first part is the run of key characters before
#: them, from its first ``eyJ`` that starts a word (``_jwt_start``).
_JWT = re.compile(r"\.eyJ[A-Za-z0-9_\-]{5,}+\.[A-Za-z0-9_\-]*+")
_KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_DIGIT = re.compile(r"\d")
#: ``scheme://user:password@`` (also ``redis://:password@``) and long bare user tokens
#: (``https://ghp_…@github.com``); group ``password`` or ``token`` is the secret, the whole userinfo
#: is redacted.
_USERINFO = re.compile(r"://(?P<userinfo>[^/\s@:]*+:(?P<password>[^/\s@]++)|(?P<token>[^/\s@:]{20,}+))@")
_QUERY_SECRET = re.compile(
    r"[?&](?i:api[_-]?key|key|token|access[_-]?token|auth|signature|sig|password|secret|client[_-]?secret)="
    r"(?P<value>[^&#\s]+)"
)


#: Strings up to this length have their redaction and secret scan remembered (``_MEMO`` of them): a
#: worker sees the same provider URLs, model ids and option values job after job, and the scan is a
#: few regular expressions over each. Longer strings are scanned every time, so a job cannot fill the
#: memo with large strings.
_MEMO_CHARS = 512
_MEMO = 2048
_R = TypeVar("_R")


def _remember_short(fn: Callable[[str], _R]) -> Callable[[str], _R]:
    """``fn`` with its answers for strings of up to ``_MEMO_CHARS`` characters remembered."""
    remembered = functools.lru_cache(maxsize=_MEMO)(fn)

    @functools.wraps(fn)
    def call(text: str) -> _R:
        return remembered(text) if len(text) <= _MEMO_CHARS else fn(text)

    return call


def key_words(key: str) -> list[str]:
    """``openaiApiKey`` → ``["openai", "api", "key"]``; separators and case changes split words."""
    return [w.lower() for w in _WORD.findall(key)]


@_remember_short
def is_secret_key(key: str) -> bool:
    """Whether a key name says its value is a credential (``api_key``, ``openai_key``, ``pwd``, ``dsn``,
    ``access_tokens``, ``sessionid``, ``pin`` …) and not a property or a count of them (``token_count``,
    ``auth_type``, ``max_tokens``)."""
    words = key_words(key)
    if not words:
        return False
    if len(words) > 1 and words[-1] in _DESCRIBING_WORDS:
        return False
    if words[-1] == "key" or _SECRET_WORDS.intersection(words):
        return True
    if words[-1] in _LAST_SECRET_WORDS or (
            len(words) > 1 and words[-2] in _LAST_SECRET_WORDS and words[-1] in ("code", "number")):
        return True
    joined = "".join(words)
    if any(compound in joined for compound in _SECRET_COMPOUNDS):
        return True
    plurals = any(w.endswith("s") and w[:-1] in _SECRET_WORDS for w in words)
    return plurals and not _COUNTING_WORDS.intersection(words)


def _is_basic_credentials(value: str) -> bool:
    """Whether ``value`` is base64 of ``user:password`` (what follows ``Basic`` in a header)."""
    try:
        return b":" in base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except ValueError:
        return False


def _jwt_start(head: str) -> int:
    """Where the JWT whose first part ends ``head`` starts in it (-1: none): at the first ``eyJ`` that
    starts a word, with at least five characters after it (a later one has fewer)."""
    if head.startswith("eyJ"):
        start = 0
    elif (dash := head.find("-eyJ")) >= 0:
        start = dash + 1
    else:
        return -1
    return start if len(head) - start >= 8 else -1


def _secret_spans(text: str) -> Iterator[tuple[int, int]]:
    """Start and end of every secret in ``text``, pass by pass (spans of two passes may overlap)."""
    for pattern in _ALWAYS:
        for m in pattern.finditer(text):
            yield m.span()
    for pattern in _PREFIXED:
        for m in pattern.finditer(text):
            if _DIGIT.search(m.group("rest")):
                yield m.span()
    floor = 0  # a JWT's first part lies between the previous match and this one
    for m in _JWT.finditer(text):
        before = text[floor:m.start()]
        head = before[len(before.rstrip(_KEY_CHARS)):]
        start = _jwt_start(head)
        if start >= 0:
            yield m.start() - len(head) + start, m.end()
        floor = m.end()
    # "İ" is the one character whose lower case is two: replaced first, the spans line up.
    lowered = (text.replace("İ", "I") if "İ" in text else text).lower()
    for pattern in _AUTHORIZATION:
        for m in pattern.finditer(lowered):
            yield m.span()
    for m in _BASIC.finditer(lowered):
        if _is_basic_credentials(text[m.start("basic"):m.end("basic")]):  # base64 is case-sensitive
            yield m.span()
    for m in _USERINFO.finditer(text):
        yield m.span("password") if m.group("password") is not None else m.span("token")
    for m in _QUERY_SECRET.finditer(text):
        yield m.span("value")


@_remember_short
def redact_text(text: str) -> str:
    """``text`` with token-shaped values, URL userinfo and secret query parameters replaced."""
    if not text:
        return text
    spans = sorted([*_secret_spans(text), *(m.span("userinfo") for m in _USERINFO.finditer(text))])
    if not spans:
        return text
    parts: list[str] = []
    done = 0
    for start, end in spans:
        if end <= done:
            continue
        if start >= done:
            parts += (text[done:start], REDACTED)
        done = end  # an overlapping span widens the one already replaced
    parts.append(text[done:])
    return "".join(parts)


def redact_url(url: str) -> str:
    """A URL as it may be shown: credentials in its userinfo or query, and token shapes anywhere in it,
    replaced (the text rules; a URL is the text callers most often show)."""
    return redact_text(url)


def redact(value: Any) -> Any:
    """Copy of ``value`` with secret-named keys and secret-shaped strings replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else redact(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


@_remember_short
def _secrets_in_text(text: str) -> tuple[str, ...]:
    return tuple(text[start:end] for start, end in _secret_spans(text))


def secret_values(value: Any) -> list[str]:
    """The strings ``redact`` would hide in ``value``: scrub them from messages that quote them."""
    found: list[str] = []

    def walk(v: Any, secret: bool) -> None:
        if isinstance(v, dict):
            for k, item in v.items():
                walk(item, secret or (isinstance(k, str) and is_secret_key(k)))
        elif isinstance(v, (list, tuple)):
            for item in v:
                walk(item, secret)
        elif isinstance(v, str):
            if secret and len(v) >= 4:
                found.append(v)
            found.extend(s for s in _secrets_in_text(v) if len(s) >= 4)
        elif secret and isinstance(v, (int, float)) and not isinstance(v, bool) and len(str(v)) >= 4:
            found.append(str(v))

    walk(value, False)
    return found


#: The most characters × secret values ``scrub`` replaces literally (``str.replace`` reads the text
#: once per value, about 50 ms at this product). A job's options may hold a hundred thousand secret
#: values, and a message of 64 KiB then took 2.4 s to scrub; past the budget it is withheld instead.
_SCRUB_BUDGET = 1 << 27


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` (longest first) and every secret shape replaced; withheld
    whole when it is too long to scrub of that many values (``_SCRUB_BUDGET``)."""
    values = sorted({s for s in secrets if s}, key=len, reverse=True)
    if len(values) * len(text) > _SCRUB_BUDGET:
        return (f"[{len(text):,} characters withheld: too long to scrub of the job's "
                f"{len(values):,} secret values]")
    for secret in values:
        text = text.replace(secret, REDACTED)
    return redact_text(text)


def _scrub_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, list):
        return [_scrub_value(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub_value(v, secrets) for v in value)
    if isinstance(value, dict):
        return {_scrub_value(k, secrets): _scrub_value(v, secrets) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text, scrubbed = str(value), scrub(str(value), secrets)
    return scrubbed if scrubbed != text else value


def _quotes_secret(exc: BaseException, secrets: list[str]) -> bool:
    texts = [str(exc), repr(exc.args), *(str(v) for v in vars(exc).values())]
    return any(scrub(t, secrets) != t for t in texts)


def scrub_exception(exc: BaseException, secrets: Iterable[str] = ()) -> BaseException:
    """``exc`` itself when neither it nor the exceptions chained to it quote a secret; else a copy of
    the chain with ``secrets`` and secret shapes scrubbed from every message, argument and string
    attribute (a Celery result stores ``args``, a log prints the chain). The copies keep the original
    tracebacks, whose frames show code, not values."""
    secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
    chain: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in chain:
        chain.append(node)
        node = node.__cause__ or (None if node.__suppress_context__ else node.__context__)
    if not any(_quotes_secret(e, secrets) for e in chain):
        return exc
    clean: BaseException | None = None
    for original in reversed(chain):  # innermost first, so each copy can point at its scrubbed cause
        duplicate = _scrubbed_copy(original, secrets)
        duplicate.__cause__, duplicate.__context__ = clean, None
        duplicate.__suppress_context__ = True
        clean = duplicate.with_traceback(original.__traceback__)
    assert clean is not None
    return clean


def _scrubbed_copy(exc: BaseException, secrets: list[str]) -> BaseException:
    """Same type, scrubbed ``args`` and attributes; a ``ProviderExecutionError`` naming the type when the
    type cannot be copied or still shows a secret through its own ``__str__``."""
    try:
        clone = copy.copy(exc)
        clone.args = tuple(_scrub_value(a, secrets) for a in exc.args)
        for name, value in vars(exc).items():
            setattr(clone, name, _scrub_value(value, secrets))
        if not _quotes_secret(clone, secrets):
            return clone
    except Exception:  # an exception type that cannot be copied this way: fall through to a plain one
        pass
    return ProviderExecutionError(scrub(f"{type(exc).__name__}: {exc}", secrets))
