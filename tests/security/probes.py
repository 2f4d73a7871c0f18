"""The adversarial probe table: one line per attack. ``{canary_file}``, ``{recorder}`` and ``{echo}``
in a payload are filled in at run time (the canary file's path, the loopback server, the echo provider).

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

``culprit`` is text the error must contain: the field, the URL, the line, the model id.
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
    culprit: str


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
    # -- provider URLs --------------------------------------------------------------------------
    Probe("provider-unsupported-scheme", "provider", "ftp://example.invalid/x", "'ftp://example.invalid/x'"),
    Probe("provider-outside-allow-list", "provider", "https://gitlab.invalid/evil/repo", "MEDIACONDUIT_PROVIDER_ALLOW"),
    Probe("provider-empty", "provider", "", "provider must be a URL string"),
    # -- models and options ---------------------------------------------------------------------
    Probe("model-unknown", "model", "no-such-model", "'no-such-model'"),
    Probe("options-not-an-object", "options", ["a", "list"], "options must be a JSON object"),
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
    # -- Flower's API ---------------------------------------------------------------------------
    Probe("flower-input-not-an-asset", "flower", {"type": "spreadsheet"}, "unknown type 'spreadsheet'"),
]
