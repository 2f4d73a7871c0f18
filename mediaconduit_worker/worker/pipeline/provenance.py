"""Step: the output's generation prompt is completed with what the worker knows (digests, the pinned
source, the capability, the service), so a result alone says what ran (``mediaconduit replay``)."""

from __future__ import annotations

from collections.abc import Callable

from ...redaction import redact_url
from ..calls import capability_of
from ..replay import service_record
from .run import Run


def complete_provenance(run: Run, proceed: Callable[[], None]) -> None:
    proceed()
    served = run.served
    assert served is not None  # the serve step ran (or a step before this one answered and returned)
    job, output, runnable = run.job, served.output, served.runnable
    prompt = output.metadata.get("generation_prompt")
    if prompt is None:  # the provider made none: the model's own, timed from the call's start
        prompt = runnable.generation_prompt(job.input, job.options, served.started)
    capability = job.execution.capability or capability_of(served.loaded, runnable)
    source = served.loaded.source
    output.metadata["generation_prompt"] = run.record.complete_prompt(
        prompt, input=job.input, output=output, provider_url=redact_url(served.provider_url), source=source,
        capability=str(capability) if capability else None, service=service_record(served.loaded.provider),
        route=served.route)
