"""Worker side of replay: a job may pin its Docker service to the commit a record names.

``mediaconduit replay`` puts ``{SERVICE_PIN_OPTION: commit}`` in a step's options; the task pops it
(the model and the record never see it) and, for that job only, the provider's service URL is
fetched at that commit instead of its branch head.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from typing import Any

from ..blobs import BlobStore
from ..errors import ReplayError
from ..provider import DockerProvider, MediaProvider
from ..redaction import REDACTED
from ..sources import parse_source

log = logging.getLogger(__name__)
SERVICE_PIN_OPTION = "mediaconduit.service_commit"
_service_commit: contextvars.ContextVar[str | None] = contextvars.ContextVar("service_commit", default=None)
_image_ids: dict[str, str] = {}


def at_commit(url: str, commit: str) -> str:
    """A git URL pinned to ``commit``, keeping the folder it names (``#subdirectory=``, GitHub's ``/tree/``)."""
    source = parse_source(url)
    return source.at(commit, source.subdirectory)


def pin_services(commit: Any) -> None:
    """Set (or clear, with None) the service commit for the job this thread runs now."""
    _service_commit.set(commit if isinstance(commit, str) and commit else None)


def pinned_service_url(url: str) -> str:
    """``url`` at the pinned commit when this job has one (git services only)."""
    commit = _service_commit.get()
    if commit is None or parse_source(url).kind != "git":
        return url
    return at_commit(url, commit)


def service_record(provider: MediaProvider) -> dict[str, Any] | None:
    """What the record says of a Docker provider's service: URL, id, commit, image tag and image id."""
    if not isinstance(provider, DockerProvider) or provider.service_info is None:
        return None
    info = provider.service_info
    return {"url": info.url, "id": info.service_id, "commit": info.commit, "image": info.image,
            "image_id": _image_id(info.image)}


def _image_id(image: str) -> str | None:
    """The engine's id of an image (content-addressed), looked up once per tag and process."""
    if image not in _image_ids:
        from ..services import get_service_registry

        try:
            _image_ids[image] = get_service_registry().client.images.get(image).id
        except Exception as exc:  # the record still names the tag; say why the id is missing
            log.warning("cannot read the id of image %s for the record: %s", image, exc)
            return None
    return _image_ids[image]


# -- producer side: a record back into a chain ------------------------------------------------------
@dataclass
class ReplayStep:
    """One step of a recorded chain, as it will be sent again."""

    index: int
    provider_url: str
    """Pinned: ``URL@commit`` (git) or ``pypi:name==version``."""
    model: str
    options: dict[str, Any]
    recorded_output: str | None
    service: dict[str, Any] | None


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
    url, kind = prompt.get("provider_url"), prompt.get("source_kind")
    if not isinstance(url, str) or "record_version" not in prompt:
        raise ReplayError(f"step {index} ({prompt.get('model_id')!r}): the record has no provider URL and commit "
                          "(written before record format 1); it cannot be replayed")
    if kind == "git" and prompt.get("provider_commit"):
        return at_commit(url, prompt["provider_commit"])
    if kind == "pypi" and prompt.get("provider_version"):
        return f"pypi:{prompt['provider_version']}"
    raise ReplayError(f"step {index} ({prompt.get('model_id')!r}): provider {url!r} was a {kind} source without a "
                      "commit; only git commits and PyPI versions can be fetched again as they were")


def plan(result: dict[str, Any]) -> tuple[Any, list[ReplayStep]]:
    """The original input and the steps to send again; refuses clearly what cannot be reproduced."""
    prompts = recorded_prompts(result)
    steps = []
    for index, prompt in enumerate(prompts, 1):
        options = {k: v for k, v in (prompt.get("options") or {}).items() if v != REDACTED}  # secrets: worker env
        if prompt.get("capability"):
            options["capability"] = prompt["capability"]
        service = prompt.get("service") if isinstance(prompt.get("service"), dict) else None
        if service and service.get("commit") and not str(service["commit"]).startswith("dir-"):
            options[SERVICE_PIN_OPTION] = service["commit"]
        steps.append(ReplayStep(index, _pinned_url(prompt, index), str(prompt.get("model_id")), options,
                                prompt.get("output_digest"), service))
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
    signatures = [transform.s(original, first.provider_url, first.model, first.options)]
    signatures += [transform.s(s.provider_url, s.model, s.options) for s in rest]
    return chain(*signatures).delay()


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
