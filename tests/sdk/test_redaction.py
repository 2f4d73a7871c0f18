"""Redaction (mediaconduit_worker.redaction): the reference table of what is a secret and what is not.

Key names decide for a value whatever it looks like; value shapes decide wherever a string stands
(options under innocent names, error messages, URLs). A false positive only hides a value in a record;
a false negative leaks it, so the table errs on the side of hiding, and pins what it keeps.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import pytest
from support.adversarial import ADVERSARIAL, adversarial

from mediaconduit_worker.errors import ProviderHTTPError
from mediaconduit_worker.redaction import (
    REDACTED,
    is_secret_key,
    redact,
    redact_text,
    redact_url,
    scrub,
    scrub_exception,
    secret_values,
)

SECRET_KEYS = [
    "api_key", "apiKey", "OPENAI_API_KEY", "x-api-key", "xi-api-key", "key", "openai_key", "access_key",
    "private_key", "primary_key", "token", "access_token", "refreshToken", "secret", "client_secret", "password",
    "db_password", "passwd", "pass", "pwd", "passphrase", "auth", "authorization", "Authorization", "cookie",
    "cookies", "session", "sessionId", "session_token", "dsn", "sentry_dsn", "connection_string", "connectionString",
    "credentials", "signature", "bearer",
    # plurals and compounds (each once stored in the backend and the generation prompt)
    "passwords", "tokens", "access_tokens", "accessTokens", "refresh_tokens", "passcode", "sessionid", "sessions",
    "otp", "otp_code", "totp", "pin", "user_pin", "pinCode", "jwt", "jwt_token", "secrets", "cookies",
]
#: Common option names that must stay visible (a count, a model setting, a word that merely contains one).
KEPT_KEYS = [
    "maxTokens", "max_tokens", "max_new_tokens", "tokenizer", "token_count", "token_limit", "auth_type",
    "author", "authors", "authority", "keyframes", "key_frames", "keyword", "monkey", "hotkey", "turkey", "passes",
    "num_passes", "passage", "compass", "bypass", "prompt", "temperature", "voice", "model", "",
    # counts of plural secret words: usage as APIs report it, limits, rates
    "max_output_tokens", "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens",
    "cache_read_input_tokens", "reasoning_tokens", "tokens_per_minute", "num_sessions",
    # words that merely contain a short secret word
    "pinned", "spin", "spinner", "pinyin", "pin_memory", "top_p", "topic", "optimizer", "options",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_key_names(key):
    assert is_secret_key(key)
    assert redact({key: "some value"}) == {key: REDACTED}


@pytest.mark.parametrize("key", KEPT_KEYS)
def test_option_names_that_are_not_secrets(key):
    assert not is_secret_key(key)
    assert redact({key: 512}) == {key: 512}


#: (text, what must disappear from it)
SECRET_SHAPES = [
    ("sk-proj-abcdefghij0123456789", "sk-proj-abcdefghij0123456789"),
    ("key sk-ant-api03-abcdefghij0123456789 here", "sk-ant-api03-abcdefghij0123456789"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("AIzaSyA1234567890abcdefghijklmnopqrstu", "AIzaSyA1234567890abcdefghijklmnopqrstu"),
    ("glpat-abcdefghij1234567890", "glpat-abcdefghij1234567890"),
    ("xoxb-1234-5678-abcdefghij", "xoxb-1234-5678-abcdefghij"),
    ("hf_abcdefghijklmnopqrstuvwxyz012345", "hf_abcdefghijklmnopqrstuvwxyz012345"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl", "eyJzdWIiOiIxMjMifQ"),
    ("Authorization: Bearer abcdef0123456789", "abcdef0123456789"),
    ("authorization: bearer abcdef0123456789", "abcdef0123456789"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("Authorization: token 0123456789abcdef", "0123456789abcdef"),
    ("https://user:hunter22@example.com/repo", "hunter22"),
    ("redis://:pw123456@redis:6379/0", "pw123456"),
    ("https://ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r", "ghp_abcdefghijklmnopqrstuvwxyz0123"),
    ("https://api.example.com/v1?api_key=abc123&x=1", "abc123"),
    ("https://api.example.com/v1?x=1&access_token=zz99", "zz99"),
]
#: Text that looks a little like a secret and must be kept (prose in a prompt, ordinary values).
KEPT_TEXT = [
    "the basic principles of design", "Basic principles", "a bearer instrument", "unexpected token somewhere",
    "max_tokens=1024", "risk_assessment", "https://example.com/repo", "https://github.com/MediaConduit/echo-provider",
    "user@example.com", "keyframes at 0s and 2s", "passes: 4", "transient error from xai-provider/grok-3",
    "hf_transfer_enabled", "sk-learn-pipeline", "npm_config_cache",
]


@pytest.mark.parametrize("text, secret", SECRET_SHAPES)
def test_secret_shapes_are_redacted_anywhere(text, secret):
    assert secret not in redact_text(text)
    assert REDACTED in redact_text(text)
    assert secret not in str(redact({"note": text, "nested": [text]}))
    assert any(secret in s for s in secret_values({"note": text}))


@pytest.mark.parametrize("text", KEPT_TEXT)
def test_ordinary_text_is_kept(text):
    assert redact_text(text) == text
    assert secret_values({"note": text}) == []


def test_secret_values_of_options_nested_and_numeric():
    options = {"auth": {"user": "bobby", "password": "pw-4242"}, "pin": 7, "session": 123456, "tags": ["x", "sk-abcdefgh0123"]}
    found = secret_values(options)
    assert {"bobby", "pw-4242", "123456", "sk-abcdefgh0123"} <= set(found)
    assert "x" not in found and "7" not in found


def test_scrub_replaces_given_values_and_shapes():
    assert scrub("key=hunter2 and sk-abcdefgh0123", ["hunter2"]) == f"key={REDACTED} and {REDACTED}"


def _raise_chain(secret: str) -> Exception:
    try:
        try:
            raise RuntimeError(f"upstream rejected {{'api_key': {secret!r}}}")
        except RuntimeError as inner:
            raise ValueError("provider failed: " + str(inner), {"key": secret}) from inner
    except ValueError as outer:
        return outer


def test_scrub_exception_cleans_the_whole_chain_and_keeps_types():
    secret = "plain-secret-value"
    exc = _raise_chain(secret)
    clean = scrub_exception(exc, [secret])
    assert clean is not exc and type(clean) is ValueError and type(clean.__cause__) is RuntimeError
    text = "".join(traceback.format_exception(clean))
    assert secret not in text and secret not in repr(clean.args)
    assert "provider failed" in text and "upstream rejected" in text and "_raise_chain" in text


def test_scrub_exception_keeps_clean_exceptions_and_attributes():
    plain = KeyError("no such model")
    assert scrub_exception(plain, ["secret-value"]) is plain
    http = ProviderHTTPError("401: bad key secret-value", status=401, api_message="key secret-value revoked")
    clean = scrub_exception(http, ["secret-value"])
    assert isinstance(clean, ProviderHTTPError) and clean.status == 401
    assert "secret-value" not in str(clean) and "secret-value" not in (clean.api_message or "")


@pytest.mark.parametrize("path", ["/org/provider.git", "/" + "a" * 3000 + ".git"])  # remembered, and too long to be
def test_redact_url_hides_credentials_every_time(path):
    url = f"git+https://deploy:hunter2secret@git.example.com{path}?token=abc123def456"
    for _ in range(2):  # the second call of a short URL is answered from memory
        shown = redact_url(url)
        assert "hunter2secret" not in shown and "abc123def456" not in shown
        assert shown.startswith(f"git+https://{REDACTED}@git.example.com{path}")


#: Shapes found inside text that another shape's pattern matched and refused (each pattern is its own
#: pass), in mixed case, and after the one character whose lower case is two.
HIDDEN_SHAPES = [
    ("sk-abcdef-eyJhbGciOiJI.eyJzdWIiOiIx.c2ln", "eyJzdWIiOiIx"),       # a JWT inside a key-less sk- run
    ("basic x/AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),           # an AWS id inside a non-credential Basic
    ("xsk-abcdefgh-sk-abcdef012345", "sk-abcdef012345"),               # a prefix that starts no word, then one that does
    ("Authorization: BeArEr abcdef0123456789", "abcdef0123456789"),
    ("İİ Bearer abcdef0123456789 İ", "abcdef0123456789"),
    ("xx-eyJhbGciOiJI.eyJzdWIiOiIx.c2ln", "eyJhbGciOiJI"),
]


@pytest.mark.parametrize("text, secret", HIDDEN_SHAPES)
def test_shapes_behind_other_shapes_and_in_any_case_are_redacted(text, secret):
    assert secret not in redact_text(text)
    assert any(secret in s for s in secret_values({"note": text}))


def test_a_jwt_keeps_what_precedes_its_first_word():
    assert redact_text("xx-eyJhbGciOiJI.eyJzdWIiOiIx.c2ln end") == f"xx-{REDACTED} end"


def _best_seconds(fn: Callable[[], object], runs: int) -> float:
    """The least CPU time of ``runs`` calls: on a shared machine wall time stretches a long call more
    than a short one (it spans more of other processes' time slices), CPU time does not."""
    best = float("inf")
    for _ in range(runs):
        started = time.thread_time()
        fn()
        best = min(best, time.thread_time() - started)
    return best


def _producer_path(text: str) -> None:
    """What the producer and the worker do with a job holding ``text``: the stored copy, the secret
    values errors are scrubbed of, the scrub; ``text`` also stands as a key name."""
    job = {"input": text, text: 1}
    redact(job)
    scrub(text, secret_values(job))


@pytest.mark.timeout(300)  # a quadratic pattern takes hours on 1 MiB: this fails it instead
@pytest.mark.parametrize("shape", ADVERSARIAL)
def test_redaction_is_linear_on_adversarial_strings(shape):
    """16 times the text takes about 16 times as long (quadratic: 256 times); ``bench/bench_redaction.py``
    prints the figures beside a yardstick."""
    small, large = (adversarial(shape, size) for size in (64 * 1024, 1024 * 1024))
    ratio = _best_seconds(lambda: _producer_path(large), 2) / _best_seconds(lambda: _producer_path(small), 4)
    assert ratio < 40, f"{shape}: 16x the text took {ratio:.0f}x as long"


def test_a_message_too_long_to_scrub_of_very_many_secrets_is_withheld():
    """A hundred thousand secret values: a short message is scrubbed of them, a long one is withheld
    whole rather than taking seconds (characters × values past the budget)."""
    secrets = [f"{i:08d}xy" for i in range(100_000)]
    assert scrub("rejected 00000042xy and 00099999xy", secrets) == f"rejected {REDACTED} and {REDACTED}"
    long = "upstream said no " * 4000 + "00000042xy"
    withheld = scrub(long, secrets)
    assert "00000042xy" not in withheld and "upstream" not in withheld
    assert withheld == "[68,010 characters withheld: too long to scrub of the job's 100,000 secret values]"
    assert scrub(long, secrets[40:45]) == long.replace("00000042xy", REDACTED)
