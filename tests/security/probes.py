"""The adversarial probe table: one line per attack. ``{canary_file}``, ``{recorder}`` and ``{echo}``
in a payload are filled in at run time (the canary file's path, the loopback server, the echo provider).

``via`` says how the probe is sent:
- ``input``: the job's input (JSON), to the echo provider's ``upper`` model;
- ``provider``: the job's provider URL (model ``upper``);
- ``model``: the echo provider's model id;
- ``options``: the job's options, to the echo provider's ``upper`` model;
- ``manifest``: files of a provider repository (``{path: text}``), loaded by URL, model ``m``;
- ``compose``: files of a service repository, named by a Docker provider's ``serviceUrl``;
- ``batch``: one line of a batch file, read by the batch reader;
- ``flower``: the job's input, sent through Flower's ``async-apply`` API.

``culprit`` is text the error must contain: the field, the URL, the line, the model id.
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


ECHO_MAIN = "from echo_provider import *\n"

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
    # -- batch lines ----------------------------------------------------------------------------
    Probe("batch-not-json", "batch", "{not json", "not JSON"),
    Probe("batch-options-not-object", "batch", '{"input": "x", "options": 3}', "'options' must be a JSON object"),
    # -- Flower's API ---------------------------------------------------------------------------
    Probe("flower-input-not-an-asset", "flower", {"type": "spreadsheet"}, "unknown type 'spreadsheet'"),
]
