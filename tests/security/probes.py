"""The adversarial probe table: one line per attack. ``{canary_file}``, ``{recorder}``, ``{recorder_port}``,
``{echo}``, ``{leaky}`` and ``{canary_option}`` in a payload are filled in at run time (the canary file's
path, the loopback server and its port, the echo provider, the leaky provider of ``conftest.py``, the
secret that must never be shown).

``via`` says how the probe is sent:
- ``input``: the job's input (JSON), to the echo provider's ``upper`` model;
- ``provider``: the job's provider URL (model ``upper``);
- ``model``: the echo provider's model id;
- ``options``: the job's options, to the echo provider's ``upper`` model;
- ``manifest``: files of a provider repository (``{path: text}``), loaded by URL, model ``m``;
- ``compose``: files of a service repository, named by a Docker provider's ``serviceUrl``;
- ``batch``: one line of a batch file, read by the batch reader;
- ``flower``: the job's input, sent through Flower's ``async-apply`` API.

``culprit`` is text the error must contain: the field, the URL, the line, the model id. ``None``: the job
must succeed (a secret handed to a model that works), and nothing it returns may show a canary.
``provider``, ``model`` and ``options`` are the rest of the job for ``input``, ``options`` and ``flower``
probes (``options`` probes carry their options as the payload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    id: str
    via: str
    payload: Any
    culprit: str | None
    provider: str = "{echo}"
    model: str = "upper"
    options: Any = None


def nested(depth: int, leaf: Any = "x") -> Any:
    """``depth`` lists inside each other (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


#: Options that carry the canary under every secret key name and in every secret shape.
SECRET_OPTIONS = {
    **{name: "{canary_option}" for name in (
        "api_key", "apiKey", "x-api-key", "openai_key", "access_key", "token", "secret", "password", "pass", "pwd",
        "passphrase", "auth", "authorization", "cookie", "session", "dsn", "connection_string", "credentials")},
    "note": "{canary_option}",
    "header": "Bearer {canary_option}",
    "lower": "bearer {canary_option}",
    "endpoint": "https://user:{canary_option}@api.example.invalid/v1",
    "query": "https://api.example.invalid/v1?api_key={canary_option}",
    "nested": {"deeper": [{"auth": {"user": "bob", "password": "{canary_option}"}}]},
    "max_tokens": 256,
}


ECHO_MAIN = "from echo_provider import *\n"

PROBES: list[Probe] = [
    # -- inputs ---------------------------------------------------------------------------------
    Probe("input-unknown-type", "input", {"type": "spreadsheet", "uri": "x"}, "unknown type 'spreadsheet'"),
    Probe("input-not-json-type", "input", 12345, "invalid input of type int"),
    Probe("input-empty-list", "input", [], "invalid input of type list"),
    Probe("input-text-without-content", "input", {"type": "text"}, "'content'"),
    Probe("input-file-uri-canary", "input", {"type": "image", "uri": "file://{canary_file}"}, "input field 'uri'"),
    Probe("input-path-canary", "input", {"type": "audio", "uri": "{canary_file}"}, "input field 'uri'"),
    Probe("input-file-uri-environ", "input", {"type": "image", "uri": "file:///proc/self/environ"}, "input field 'uri'"),
    Probe("input-path-environ", "input", {"type": "video", "uri": "/proc/self/environ"}, "input field 'uri'"),
    Probe("input-relative-path", "input", {"type": "image", "uri": "../../../../proc/self/environ"}, "input field 'uri'"),
    Probe("input-file-uri-localhost", "input", {"type": "image", "uri": "file://localhost/etc/passwd"}, "input field 'uri'"),
    Probe("input-list-file-uri", "input", ["text", {"type": "image", "uri": "file://{canary_file}"}], "input[1] field 'uri'"),
    Probe("input-chained-result-file-uri", "input",
          {"asset": {"type": "image", "uri": "/proc/self/environ"}, "metadata": {}}, "input.asset field 'uri'"),
    Probe("input-blob-path-traversal", "input", {"type": "image", "uri": "blob://sha256/../../../etc/passwd"},
          "input field 'uri'"),
    Probe("input-blob-missing", "input", {"type": "image", "uri": "blob://sha256/" + "0" * 64}, "not in the blob store"),
    Probe("input-blob-digest-mismatch", "input",
          {"type": "image", "uri": "blob://sha256/" + "a" * 64, "sha256": "b" * 64}, "input field 'sha256'"),
    Probe("input-unknown-scheme", "input", {"type": "image", "uri": "gopher://{recorder}/x"}, "unsupported URL scheme"),
    Probe("input-url-not-allowed", "input", {"type": "image", "uri": "https://example.invalid/cat.png"},
          "not allowed by MEDIACONDUIT_INPUT_URL_ALLOW"),
    Probe("input-url-loopback-allowed", "input", {"type": "image", "uri": "{recorder}/x.png"}, "loopback"),
    Probe("input-url-localhost-allowed", "input", {"type": "image", "uri": "http://localhost:{recorder_port}/x"},
          "localhost (resolves to 127.0.0.1) is not a public address (loopback)"),
    Probe("input-url-short-ip-allowed", "input", {"type": "image", "uri": "http://127.1:{recorder_port}/x"}, "loopback"),
    Probe("input-url-decimal-ip-allowed", "input", {"type": "image", "uri": "http://2130706433:{recorder_port}/x"},
          "loopback"),
    Probe("input-url-hex-ip-allowed", "input", {"type": "image", "uri": "http://0x7f000001:{recorder_port}/x"},
          "loopback"),
    Probe("input-url-unspecified-allowed", "input", {"type": "image", "uri": "http://0.0.0.0:{recorder_port}/x"},
          "unspecified"),
    Probe("input-url-ipv6-loopback-allowed", "input", {"type": "image", "uri": "http://[::1]:{recorder_port}/x"},
          "loopback"),
    Probe("input-url-ipv4-mapped-allowed", "input",
          {"type": "image", "uri": "http://[::ffff:127.0.0.1]:{recorder_port}/x"}, "loopback, wrapped in"),
    Probe("input-url-userinfo-trick", "input",
          {"type": "image", "uri": "http://allowed.example.invalid@127.0.0.1:{recorder_port}/x"}, "carries credentials"),
    Probe("input-url-metadata", "input", {"type": "image", "uri": "http://169.254.169.254/latest/meta-data/"},
          "not allowed by MEDIACONDUIT_INPUT_URL_ALLOW"),
    Probe("input-data-not-base64", "input", {"type": "image", "data": "%%% not base64 %%%"}, "input field 'data'"),
    Probe("input-data-and-uri", "input", {"type": "image", "data": "AAAA", "uri": "file:///etc/passwd"},
          "either 'data' (base64) or 'uri'"),
    Probe("input-inline-too-large", "input", {"type": "image", "data": "QUFB" * 30000}, "MEDIACONDUIT_MAX_INLINE_BYTES"),
    Probe("input-data-url-too-large", "input", {"type": "image", "uri": "data:image/png;base64," + "QUFB" * 30000},
          "MEDIACONDUIT_MAX_INLINE_BYTES"),
    Probe("input-metadata-not-object", "input", {"type": "text", "content": "x", "metadata": [1]},
          "input field 'metadata'"),
    Probe("input-file-uri-with-secret-options", "input", {"type": "image", "uri": "file://{canary_file}"},
          "input field 'uri'", "{leaky}", "leak", {"token": "{canary_option}", "note": "{canary_option}"}),
    Probe("input-asset-metadata-secrets", "input",
          {"type": "text", "content": "x", "metadata": {"api_key": "{canary_option}", "note": "{canary_option}",
                                                         "generation_prompt": {"options": {"token": "{canary_option}"}}}},
          None),
    Probe("input-lone-surrogate", "input", "abc\ud800def", "lone surrogate"),
    Probe("input-too-deep", "input", nested(300), "nests deeper than 200"),
    Probe("input-too-large-for-producer", "input", "x" * (9 * 1024 * 1024), "MEDIACONDUIT_MAX_JOB_BYTES"),
    Probe("input-too-large-for-worker", "input", "x" * (1536 * 1024), "MEDIACONDUIT_MAX_JOB_BYTES"),
    # -- provider URLs --------------------------------------------------------------------------
    Probe("provider-unsupported-scheme", "provider", "ftp://example.invalid/x", "'ftp://example.invalid/x'"),
    Probe("provider-outside-allow-list", "provider", "https://gitlab.invalid/evil/repo", "MEDIACONDUIT_PROVIDER_ALLOW"),
    Probe("provider-empty", "provider", "", "provider must be a URL string"),
    # -- models and options ---------------------------------------------------------------------
    Probe("model-unknown", "model", "no-such-model", "'no-such-model'"),
    Probe("options-not-an-object", "options", ["a", "list"], "options must be a JSON object"),
    Probe("options-secrets-to-failing-model", "options", SECRET_OPTIONS, "upstream rejected", "{leaky}", "leak"),
    Probe("options-secrets-to-working-model", "options", SECRET_OPTIONS, None, "{leaky}", "ok"),
    Probe("options-secrets-to-echo", "options", SECRET_OPTIONS, None),
    Probe("options-secrets-to-retrying-model", "options", {**SECRET_OPTIONS, "wait": 0.1}, "rate limited",
          "{leaky}", "flaky"),
    Probe("options-secrets-to-logging-model", "options", SECRET_OPTIONS, None, "{leaky}", "log"),
    Probe("options-secret-under-innocent-name", "options", {"note": "{canary_option}", "prefix": "{canary_option}"},
          "upstream rejected", "{leaky}", "leak"),
    Probe("options-secret-to-unknown-model", "options", {"api_key": "{canary_option}"}, "'no-such-model'",
          "{leaky}", "no-such-model"),
    Probe("options-too-deep", "options", {"a": nested(300)}, "options.a"),
    Probe("options-lone-surrogate-key", "options", {"k\udc00": 1}, "lone surrogate"),
    # -- manifests ------------------------------------------------------------------------------
    Probe("manifest-missing-id", "manifest", {"MediaConduit.provider.yml": "name: x\n"}, "field 'id'"),
    Probe("manifest-not-a-mapping", "manifest", {"MediaConduit.provider.yml": "- a\n- list\n"}, "must be a mapping"),
    Probe("manifest-main-outside", "manifest",
          {"MediaConduit.provider.yml": "id: x\nname: x\nmain: ../../../../etc/passwd\n"}, "field 'main'"),
    # -- batch lines ----------------------------------------------------------------------------
    Probe("batch-not-json", "batch", "{not json", "not JSON"),
    Probe("batch-options-not-object", "batch", '{"input": "x", "options": 3}', "'options' must be a JSON object"),
    Probe("batch-lone-surrogate", "batch", '"abc\\ud800def"', "input holds a lone surrogate"),
    Probe("batch-lone-surrogate-in-options", "batch", '{"input": "x", "options": {"p": "\\udfff"}}',
          "options.p holds a lone surrogate"),
    Probe("batch-deep-list", "batch", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    Probe("batch-deep-object", "batch", '{"input": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001, "nested too deeply"),
    Probe("batch-deep-but-parsable", "batch", '{"input": ' + "[" * 300 + '"x"' + "]" * 300 + "}",
          "nests deeper than 200"),
    Probe("batch-file-uri", "batch", '{"input": {"type": "image", "uri": "file:///proc/self/environ"}}',
          "input field 'uri'"),
    Probe("batch-path-in-list", "batch", '[{"type": "audio", "uri": "/etc/shadow"}]', "input[0] field 'uri'"),
    Probe("batch-line-too-large", "batch", '"' + "x" * (9 * 1024 * 1024) + '"', "MEDIACONDUIT_MAX_JOB_BYTES"),
    # -- Flower's API ---------------------------------------------------------------------------
    Probe("flower-input-not-an-asset", "flower", {"type": "spreadsheet"}, "unknown type 'spreadsheet'"),
    Probe("flower-file-uri-canary", "flower", {"type": "image", "uri": "file://{canary_file}"}, "input field 'uri'"),
    Probe("flower-path-environ", "flower", {"type": "audio", "uri": "/proc/self/environ"}, "input field 'uri'"),
    Probe("flower-url-loopback-allowed", "flower", {"type": "image", "uri": "{recorder}/x.png"}, "loopback"),
    Probe("flower-secrets-to-failing-model", "flower", "x", "upstream rejected", "{leaky}", "leak", SECRET_OPTIONS),
    Probe("flower-secrets-to-working-model", "flower", "x", None, "{leaky}", "ok", SECRET_OPTIONS),
    Probe("flower-too-large-for-worker", "flower", "x" * (1536 * 1024), "MEDIACONDUIT_MAX_JOB_BYTES"),
]
