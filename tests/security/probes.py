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
- ``compose``: files of a service repository (``{path: text}``), named by a Docker provider's ``serviceUrl``;
  a payload that is not a map is the compose file itself, beside a fixed ``SERVICE_MANIFEST``;
- ``batch``: one line of a batch file, read by the batch reader;
- ``flower``: the job's input, sent through Flower's ``async-apply`` API.

``culprit`` is text the error must contain: the field, the URL, the line, the model id. ``None``: the job
must succeed (a secret handed to a model that works), and nothing it returns may show a canary.
``provider``, ``model`` and ``options`` are the rest of the job for ``input``, ``options`` and ``flower``
probes (``options`` probes carry their options as the payload).
A file's content may be a ``Link``: the file is committed as a symbolic link to that target.
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


@dataclass(frozen=True)
class Link:
    """A symbolic link in a published repository (its target is filled in like any payload text)."""

    target: str


ECHO_MAIN = "from echo_provider import *\n"
#: A Docker provider whose one model needs its service: the job fails while the service is looked up.
DOCKER_MAIN = """from mediaconduit_worker import DockerProvider, MediaCapability, TextToTextModel


class M(TextToTextModel):
    def transform(self, input, options=None):
        raise AssertionError("the service was not refused")


class P(DockerProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: M}
"""
MODELS = "models: [{id: m, capabilities: [text-to-text]}]\n"
SERVICE_MANIFEST = "id: probe\nname: probe\ndocker:\n  composeFile: docker-compose.yml\n"
#: Ten aliases of ten aliases of ...: 10^7 leaves from a few hundred bytes.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdef", "bcdefg"))


def _provider(extra: str, **files: str | Link) -> dict[str, str | Link]:
    """A provider repository whose manifest is valid but for ``extra``."""
    return {"MediaConduit.provider.yml": "id: probe\nname: probe\n" + MODELS + extra, "provider.py": ECHO_MAIN,
            **files}


def _docker_provider(service_url: str) -> dict[str, str | Link]:
    return {"MediaConduit.provider.yml": f"id: probe\nname: probe\nserviceUrl: '{service_url}'\n" + MODELS,
            "provider.py": DOCKER_MAIN}


def _svc(body: str) -> str:
    """A compose file of one service ``s`` with an image, plus ``body`` (its further keys)."""
    return "services:\n  s:\n    image: busybox\n" + body


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
    Probe("input-url-encoded-dots", "input", {"type": "image", "uri": "http://allowed.example.invalid/p/%2e%2e/x"},
          "path segment '%2e%2e' is refused"),
    Probe("input-url-encoded-slash", "input", {"type": "image", "uri": "http://allowed.example.invalid/p/..%2fx"},
          "path segment '..%2fx' is refused"),
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
    # -- sources, manifests and compose files ---------------------------------------------------
    Probe("allow-dotdot-segment", "provider", "https://github.com/MediaConduit/../evil/repo.git",
          "'https://github.com/MediaConduit/../evil/repo.git'"),
    Probe("allow-dotdot-git-plus", "provider", "git+https://github.com/tests/../evil/repo", "segment '..'"),
    Probe("allow-encoded-dots", "provider", "https://github.com/MediaConduit/%2e%2e/evil/repo", "segment '%2e%2e'"),
    Probe("allow-encoded-slash", "provider", "https://github.com/tests/x%2F..%2F..%2Fevil", "x%2F..%2F..%2Fevil"),
    Probe("allow-double-encoded", "provider", "https://github.com/tests/%252e%252e/evil", "segment '%252e%252e'"),
    Probe("allow-org-prefix-only", "provider", "https://github.com/MediaConduitEvil/echo-provider",
          "MEDIACONDUIT_PROVIDER_ALLOW"),
    Probe("allow-other-port", "provider", "https://github.com:8443/MediaConduit/echo-provider",
          "MEDIACONDUIT_PROVIDER_ALLOW"),
    Probe("allow-http-downgrade", "provider", "http://github.com/MediaConduit/echo-provider",
          "MEDIACONDUIT_PROVIDER_ALLOW"),
    Probe("allow-userinfo-host", "provider", "https://github.com@127.0.0.1:9/MediaConduit/echo-provider",
          "MEDIACONDUIT_PROVIDER_ALLOW"),
    Probe("allow-file-url", "provider", "file://{canary_file}", "MEDIACONDUIT_PROVIDER_ALLOW"),
    Probe("allow-plain-path-dotdot", "provider", "/srv/../etc", "MEDIACONDUIT_PROVIDER_ALLOW"),
    Probe("allow-backslash", "provider", "https://github.com/tests\\..\\..\\evil/x", "holds a space"),
    Probe("git-option-url", "provider", "--upload-pack=touch {canary_file}.hit", "starts with '-'"),
    Probe("git-plus-option-url", "provider", "git+--upload-pack=touch {canary_file}.hit", "unsupported git URL"),
    Probe("git-ext-transport", "provider", "git+ext::sh -c touch% {canary_file}.hit", "unsupported git URL"),
    Probe("git-option-ref", "provider", "https://github.com/MediaConduit/echo-provider@--upload-pack=evil",
          "'--upload-pack=evil' is not a branch"),
    Probe("git-query", "provider", "https://github.com/MediaConduit/echo-provider?service=x", "query or fragment"),
    Probe("pypi-direct-url", "provider", "pypi:evil @ {recorder}/evil.whl", "malformed pypi provider URL"),
    Probe("manifest-id-dotdot", "manifest", {"MediaConduit.provider.yml": "id: ../../..\nname: x\n" + MODELS,
                                             "provider.py": ECHO_MAIN}, "field 'id'"),
    Probe("manifest-id-slash", "manifest", {"MediaConduit.provider.yml": "id: a/../../b\nname: x\n" + MODELS,
                                            "provider.py": ECHO_MAIN}, "field 'id'"),
    Probe("manifest-dependency-option", "manifest", _provider("dependencies: {'--requirement={canary_file}': ''}\n"),
          "dependencies.--requirement="),
    Probe("manifest-dependency-list-option", "manifest", _provider("dependencies: ['--index-url={recorder}/simple']\n"),
          "dependencies.--index-url="),
    Probe("manifest-dependency-url", "manifest", _provider("dependencies: {evil: '@ {recorder}/evil.whl'}\n"),
          "dependencies.evil"),
    Probe("manifest-dependency-path", "manifest", _provider("dependencies: {evil: '{canary_file}'}\n"),
          "dependencies.evil"),
    Probe("manifest-dependency-name-path", "manifest", _provider("dependencies: {'./evil': ''}\n"),
          "dependencies../evil"),
    Probe("manifest-alias-bomb", "manifest", {"MediaConduit.provider.yml": "id: x\nname: x\n" + ALIAS_BOMB},
          "anchors and aliases"),
    Probe("manifest-self-alias", "manifest", {"MediaConduit.provider.yml": "id: x\nname: x\nloop: &l [*l]\n"},
          "anchors and aliases"),
    Probe("manifest-deep-nesting", "manifest", {"MediaConduit.provider.yml": "id: x\nname: " + "[" * 20000},
          "nesting deeper than"),
    Probe("manifest-not-utf8", "manifest", {"MediaConduit.provider.yml": b"id: x\nname: \xff\xfe\n"},
          "MediaConduit.provider.yml is not UTF-8"),
    Probe("manifest-too-large", "manifest",
          {"MediaConduit.provider.yml": "id: x\nname: x\n#" + "a" * (1 << 20) + "\n"}, "larger than 1024 KiB"),
    Probe("manifest-huge-int", "manifest", {"MediaConduit.provider.yml": "id: x\nname: x\nversion: " + "9" * 5000},
          "MediaConduit.provider.yml is not valid YAML"),
    Probe("manifest-python-tag", "manifest",
          {"MediaConduit.provider.yml": "id: x\nname: !!python/object/apply:os.system ['touch {canary_file}.hit']\n"},
          "MediaConduit.provider.yml is not valid YAML"),
    Probe("manifest-is-link-to-canary", "manifest", {"MediaConduit.provider.yml": Link("{canary_file}")},
          "member 'MediaConduit.provider.yml'"),
    Probe("manifest-main-link-to-canary", "manifest", _provider("main: p.py\n", **{"p.py": Link("{canary_file}")}),
          "member 'p.py'"),
    Probe("manifest-relative-link-out", "manifest", _provider("main: p.py\n", **{"p.py": Link("../../../../etc/passwd")}),
          "member 'p.py'"),
    Probe("manifest-link-chain-out", "manifest",
          _provider("main: up/etc/passwd\n", d=Link("."), up=Link("d/d/../..")), "member 'up'"),
    Probe("manifest-service-url-outside", "manifest", _docker_provider("https://github.com/MediaConduitEvil/svc"),
          "MEDIACONDUIT_PROVIDER_ALLOW"),
    Probe("manifest-service-url-dotdot", "manifest", _docker_provider("https://github.com/tests/../evil/svc"),
          "segment '..'"),
    Probe("compose-volume-root", "compose", _svc("    volumes: [{type: volume, source: /, target: /host}]\n"),
          "host bind mount"),
    Probe("compose-docker-socket", "compose", _svc("    volumes: ['/var/run/docker.sock:/var/run/docker.sock']\n"),
          "host bind mount"),
    Probe("compose-volume-relative", "compose", _svc("    volumes: ['./data:/data']\n"), "host bind mount"),
    Probe("compose-volume-home", "compose", _svc("    volumes: ['~/.ssh:/root/.ssh']\n"), "host bind mount"),
    Probe("compose-volume-canary-dir", "compose",
          _svc("    volumes: [{source: '{canary_file}', target: /c}]\nvolumes: {data: {}}\n"), "host bind mount"),
    Probe("compose-volume-undeclared", "compose", _svc("    volumes: ['redis-data:/data']\n"), "'redis-data' is not declared"),
    Probe("compose-volume-bind-type", "compose", _svc("    volumes: [{type: bind, source: ., target: /x}]\n"),
          "of type 'bind'"),
    Probe("compose-dockerfile-outside", "compose",
          "services:\n  s:\n    build: {context: ., dockerfile: ../../../../etc/passwd}\n", "build 'dockerfile'"),
    Probe("compose-dockerfile-canary", "compose",
          "services:\n  s:\n    build: {context: ., dockerfile: '{canary_file}'}\n", "build 'dockerfile'"),
    Probe("compose-context-outside", "compose", "services:\n  s:\n    build: ../..\n", "build 'context'"),
    Probe("compose-alias-bomb", "compose", _svc("") + ALIAS_BOMB, "anchors and aliases"),
    Probe("compose-not-utf8", "compose", b"services:\n  s:\n    image: \xff\n", "docker-compose.yml is not UTF-8"),
    Probe("compose-is-link-to-canary", "compose", Link("{canary_file}"), "member 'docker-compose.yml'"),
    Probe("compose-network-host", "compose", _svc("    network_mode: host\n"), "'network_mode'"),
    Probe("compose-env-file", "compose", _svc("    env_file: ['{canary_file}']\n"), "'env_file'"),
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
