"""Producer side of replay: a record back into a chain of pinned steps, the code running it would fetch,
and the allow-list's word on each before anything is sent.

A RESULT.json may come from anywhere: the commits and packages it names are code a worker fetches and
runs. ``fetches`` lists them (each provider at its commit or version, each Docker service at its
commit), and ``refuse_unallowed`` refuses any outside ``MEDIACONDUIT_PROVIDER_ALLOW`` before a job is
queued; ``mediaconduit replay`` shows the list and, with no allow-list set, runs it only with ``--yes``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..blobs import BlobStore
from ..errors import ProviderSourceError, ReplayError
from ..record import prompt_source
from ..redaction import REDACTED, redact_url
from ..sources import check_allowed, parse_source
from .headers import EXEC_HEADER
from .replay import at_commit


@dataclass(frozen=True)
class ReplayStep:
    """One step of a recorded chain, as it will be sent again."""

    index: int
    provider_url: str
    """Pinned: ``URL@commit`` (git) or ``pypi:name==version``."""
    model: str
    options: dict[str, Any]
    recorded_output: str | None
    service: dict[str, Any] | None
    execution: dict[str, Any]
    """The step's ``mediaconduit_exec`` header: its capability, and its Docker service's recorded commit (git
    only)."""

    @property
    def service_commit(self) -> str | None:
        commit = self.execution.get("service_commit")
        return commit if isinstance(commit, str) else None


@dataclass(frozen=True)
class Fetch:
    """Code a replay makes a worker fetch and run: a step's provider or its service, pinned."""

    step: int
    kind: Literal["provider", "service"]
    url: str

    def __str__(self) -> str:
        return f"step {self.step} {self.kind} {redact_url(self.url)}"


def fetches(steps: list[ReplayStep]) -> list[Fetch]:
    """What running ``steps`` fetches: each provider at its commit or version, each service at its commit."""
    out = []
    for step in steps:
        out.append(Fetch(step.index, "provider", step.provider_url))
        url = step.service.get("url") if step.service else None
        if isinstance(url, str) and url:
            try:
                pinned = at_commit(url, step.service_commit) if step.service_commit else url
            except ProviderSourceError as exc:
                raise ReplayError(f"step {step.index}: the record's service URL is refused: {exc}") from None
            out.append(Fetch(step.index, "service", pinned))
    return out


def refuse_unallowed(planned: list[Fetch]) -> None:
    """Refuse the replay when any provider or service it would fetch is outside the allow-list (unset
    allows all: the caller asks first)."""
    for fetch in planned:
        try:
            check_allowed(fetch.url)
        except ProviderSourceError as exc:
            raise ReplayError(f"{fetch} is refused: {exc}") from None


def recorded_prompts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The generation prompts of a result's chain, first step first."""
    try:
        prompt = result["metadata"]["generation_prompt"]
    except (KeyError, TypeError):
        raise ReplayError("not a TransformResult: no metadata.generation_prompt") from None
    prompts = []
    while isinstance(prompt, dict):
        prompts.append(prompt)
        given = prompt.get("input")
        if isinstance(given, list) and any(isinstance(i, dict) and (i.get("metadata") or {}).get("generation_prompt")
                                           for i in given):
            raise ReplayError(f"step {prompt.get('model_id')!r} took several generated inputs; replay follows one chain")
        prompt = (given.get("metadata") or {}).get("generation_prompt") if isinstance(given, dict) else None
    return prompts[::-1]


def _pinned_url(prompt: dict[str, Any], index: int) -> str:
    url, source = prompt.get("provider_url"), prompt_source(prompt)
    kind = source.get("kind")
    if not isinstance(url, str) or "record_version" not in prompt:
        raise ReplayError(f"step {index} ({prompt.get('model_id')!r}): the record has no provider URL and commit "
                          "(written before record format 1); it cannot be replayed")
    if kind == "git" and source.get("commit"):
        return at_commit(url, source["commit"])
    if kind == "pypi" and source.get("version"):
        return f"pypi:{source['version']}"
    if kind == "path" and source.get("commit"):
        return _folder_at_commit(url, str(source["commit"]), f"step {index} ({prompt.get('model_id')!r})")
    if kind == "path":
        raise ReplayError(f"step {index} ({prompt.get('model_id')!r}): provider folder {url!r} was not in a git "
                          "repository when it ran, so no commit was recorded and it cannot be fetched again as it was")
    raise ReplayError(f"step {index} ({prompt.get('model_id')!r}): provider {url!r} was a {kind} source without a "
                      "commit; only git commits and PyPI versions can be fetched again as they were")


def _folder_at_commit(folder: str, commit: str, step: str) -> str:
    """A folder provider ran from a git work tree, whose commit the record holds: that repository at that
    commit, the folder in it (``git+file://TOP@COMMIT#subdirectory=REL``), so what ran is fetched as it was
    committed, whatever the folder holds now."""
    root = Path(parse_source(folder).location)
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise ReplayError(f"{step}: provider folder {folder!r} ran at commit {commit} of its git repository, but it is "
                          "not a git work tree here; replay where that repository is, or from its git URL") from None
    rel = root.resolve().relative_to(Path(top).resolve()).as_posix()
    return f"git+file://{top}@{commit}" + (f"#subdirectory={rel}" if rel != "." else "")


def plan(result: dict[str, Any]) -> tuple[Any, list[ReplayStep]]:
    """The original input and the steps to send again; refuses clearly what cannot be reproduced."""
    prompts = recorded_prompts(result)
    steps = []
    for index, prompt in enumerate(prompts, 1):
        options = {k: v for k, v in (prompt.get("options") or {}).items() if v != REDACTED}  # secrets: worker env
        execution: dict[str, Any] = {"capability": prompt["capability"]} if prompt.get("capability") else {}
        service = prompt.get("service") if isinstance(prompt.get("service"), dict) else None
        commit = service.get("commit") if service else None
        if isinstance(commit, str) and commit and not commit.startswith("dir-"):
            execution["service_commit"] = commit
        steps.append(ReplayStep(index, _pinned_url(prompt, index), str(prompt.get("model_id")), options,
                                prompt.get("output_digest"), service, execution))
    return _original_input(prompts[0]["input"]), steps


def _original_input(value: Any) -> Any:
    """Text as it was; media by digest, from the blob store (a clear error when the blob is gone)."""
    if isinstance(value, list):
        return [_original_input(v) for v in value]
    if not isinstance(value, dict) or value.get("type") == "text":
        return value
    digest = value.get("sha256")
    uri = value.get("uri") or ""
    if not isinstance(digest, str):
        raise ReplayError(f"the original {value.get('type')} input has no sha256 digest; it cannot be found again")
    store = BlobStore()
    if uri.startswith("blob://") and not store.path_for(digest).is_file():
        raise ReplayError(f"the original {value.get('type')} input (blob sha256:{digest}) is gone from the blob "
                          f"store {store.root}; put it back to replay")
    return {k: v for k, v in value.items() if k != "metadata"}


def submit(transform: Any, original: Any, steps: list[ReplayStep]) -> Any:
    """Send the steps through the queue as one chain of ``transform`` (the task); returns the AsyncResult of
    the last step."""
    from celery import chain

    first, *rest = steps
    signatures = [_pinned(transform.s(original, first.provider_url, first.model, first.options), first)]
    signatures += [_pinned(transform.s(s.provider_url, s.model, s.options), s) for s in rest]
    return chain(*signatures).delay()


def _pinned(signature: Any, step: ReplayStep) -> Any:
    """The signature carrying the step's execution header, a channel only trusted producers reach (a
    submitter's options are not one)."""
    return signature.set(headers={EXEC_HEADER: step.execution}) if step.execution else signature


def compare(steps: list[ReplayStep], replayed: dict[str, Any]) -> list[dict[str, Any]]:
    """Per step: the recorded and the replayed output digest, and whether they are the same."""
    again = recorded_prompts(replayed)
    rows = []
    for step, prompt in zip(steps, again + [{}] * (len(steps) - len(again))):
        new = prompt.get("output_digest")
        rows.append({"step": step.index, "model": step.model, "provider_url": step.provider_url,
                     "recorded": step.recorded_output, "replayed": new,
                     "same": bool(new) and new == step.recorded_output})
    return rows
