"""Each step of the transform task's body on its own, with a ``Job`` and no broker: what it reads from the
run, what it adds, and what it does to the rest of the steps. The whole path through real workers is in
tests/worker/test_spine.py and its neighbours."""

from __future__ import annotations

import types
from typing import Any

import pytest
from celery.exceptions import Retry
from conftest import REPO

from mediaconduit_worker.capabilities import MediaCapability
from mediaconduit_worker.deadline import time_left
from mediaconduit_worker.errors import InvalidInputError, ProviderExecutionError, TransientError
from mediaconduit_worker.record import RECORD_VERSION, TransformResult
from mediaconduit_worker.worker import pipeline
from mediaconduit_worker.worker.headers import EXEC_HEADER
from mediaconduit_worker.worker.pipeline import Job, Run, run_steps
from mediaconduit_worker.worker.redaction import current_secrets
from mediaconduit_worker.worker.replay import pinned_service_url

ECHO = str(REPO / "providers" / "echo-provider")


def request(headers: dict[str, Any] | None = None, **extra: Any) -> types.SimpleNamespace:
    """What a step reads of Celery's request: the id, the worker, retries, limits and headers as attributes."""
    return types.SimpleNamespace(id="task-1", hostname="w@host", retries=0, timelimit=(60, 60), **(headers or {}),
                                 **extra)


class Task:
    """What a step asks of the task: its retry, which raises as Celery's does."""

    def __init__(self) -> None:
        self.retried: list[dict[str, Any]] = []

    def retry(self, **kwargs: Any) -> Retry:
        self.retried.append(kwargs)
        return Retry(exc=kwargs["exc"], when=kwargs["countdown"])


def a_run(*args: Any, headers: dict[str, Any] | None = None) -> Run:
    return Run(Task(), request(headers), args)  # type: ignore[arg-type]


def parsed(*args: Any, headers: dict[str, Any] | None = None) -> Run:
    run = a_run(*args, headers=headers)
    pipeline.validate(run, lambda: None)
    return run


# -- Job ---------------------------------------------------------------------------------------------------
def test_execution_options_come_from_the_header_and_never_reach_the_model():
    job = parsed("hi", ECHO, "upper", {"prefix": ">"},
                 headers={EXEC_HEADER: {"capability": "text-to-text", "cache": True, "service_commit": "a" * 40}}).job
    assert job.options == {"prefix": ">"} and job.model == "upper" and not job.routed
    assert (job.execution.capability, job.execution.cache, job.execution.service_commit) == (
        MediaCapability.TEXT_TO_TEXT, True, "a" * 40)


def test_older_messages_with_execution_options_among_the_options_still_work():
    job = parsed("hi", ECHO, "upper", {"capability": "text-to-text", "cache": False, "n": 1}).job
    assert job.options == {"n": 1}
    assert (job.execution.capability, job.execution.cache) == (MediaCapability.TEXT_TO_TEXT, False)


def test_a_submitters_options_cannot_pin_a_service_commit():
    job = parsed("hi", ECHO, "upper", {"service_commit": "b" * 40, "mediaconduit.service_commit": "c" * 40}).job
    assert job.execution.service_commit is None  # options are the model's: passed to it, never obeyed here


@pytest.mark.parametrize("args, headers, culprit", [
    (("hi", ECHO, "upper", {"cache": "yes"}), None, "'cache' must be true or false, got 'yes'"),
    (("hi", ECHO, "upper", None), {EXEC_HEADER: {"capability": "teleport"}}, "'capability' must name a capability"),
    (("hi", ECHO, "upper", None), {EXEC_HEADER: ["cache"]}, "header 'mediaconduit_exec' must be a JSON object"),
    (("hi", ECHO, "upper", ["x"]), None, "options must be a JSON object, got list"),
    (("hi", 42, "upper", None), None, "provider must be a URL string, got 42"),
    (("hi", ECHO, "", None), None, "model must be a model id string"),
    ((3, ECHO, "upper", None), None, "invalid input of type int"),
])
def test_a_bad_job_is_refused_naming_the_culprit(args, headers, culprit):
    with pytest.raises(InvalidInputError, match=culprit):
        parsed(*args, headers=headers)


def test_the_execution_header_round_trips():
    job = parsed("hi", ECHO, "upper", None, headers={EXEC_HEADER: {"capability": "text-to-text", "cache": True}}).job
    assert job.execution.as_header() == {"capability": "text-to-text", "cache": True}


# -- steps ---------------------------------------------------------------------------------------------------
def test_scrub_hides_the_jobs_secrets_from_errors_and_logs():
    run = a_run("hi", ECHO, "upper", {"api_key": "sk-live-0123456789abcdef"})
    seen: list[tuple[str, ...]] = []

    def fail() -> None:
        seen.append(current_secrets.get())
        raise ProviderExecutionError("the API said: bad key sk-live-0123456789abcdef")

    with pytest.raises(ProviderExecutionError) as caught:
        pipeline.scrub_secrets(run, fail)
    assert "sk-live" not in str(caught.value) and "[REDACTED]" in str(caught.value)
    assert set(seen[0]) == {"sk-live-0123456789abcdef"} and current_secrets.get() == ()


def test_retry_sends_the_message_again_as_it_came_with_the_error_scrubbed():
    run = parsed("hi", ECHO, "upper", {"token": "tok-0123456789abcdef"})
    run.secrets = ("tok-0123456789abcdef",)

    def blip() -> None:
        raise TransientError("429 for tok-0123456789abcdef", retry_after=2.5)

    with pytest.raises(Retry):
        pipeline.retry_transient(run, blip)
    (call,) = run.task.retried
    assert call["args"] == run.args and call["countdown"] == 2.5 and "tok-" not in str(call["exc"])
    with pytest.raises(InvalidInputError):  # a permanent error is not retried
        pipeline.retry_transient(run, lambda: (_ for _ in ()).throw(InvalidInputError("bad")))
    assert len(run.task.retried) == 1


def test_the_rest_runs_under_the_jobs_deadline():
    run = parsed("hi", ECHO, "upper", None)
    left: list[float | None] = []
    pipeline.hold_deadline(run, lambda: left.append(time_left()))
    assert left[0] is not None and 50 < left[0] <= 60 and time_left() is None


def test_a_pinned_service_commit_holds_for_this_job_only():
    url = "https://github.com/MediaConduit/cowsay-service"
    run = parsed("hi", ECHO, "upper", None, headers={EXEC_HEADER: {"service_commit": "d" * 40}})
    inside: list[str] = []
    pipeline.pin_service(run, lambda: inside.append(pinned_service_url(url)))
    assert inside == [f"{url}@{'d' * 40}"] and pinned_service_url(url) == url


def test_a_job_that_is_not_cached_goes_straight_on():
    run = parsed("hi", ECHO, "upper", {"cache": False})
    went_on: list[bool] = []
    pipeline.answer_from_cache(run, lambda: went_on.append(True))
    assert went_on == [True] and run.result is None


def test_serve_provenance_and_result_make_a_format_2_record(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIACONDUIT_HOME", str(tmp_path))
    run = parsed("hello", ECHO, "upper", {"n": 1}, headers={EXEC_HEADER: {"capability": "text-to-text"}})
    pipeline.build_result(run, lambda: pipeline.complete_provenance(run, lambda: pipeline.serve(run, lambda: None)))
    assert run.served is not None and run.served.output.content == "HELLO"
    result = run.result
    assert result is not None and result["asset"]["content"] == "HELLO"
    assert result == TransformResult.model_validate(result).model_dump(mode="json", exclude_unset=True)
    prompt = result["metadata"]["generation_prompt"]
    assert prompt["record_version"] == RECORD_VERSION and prompt["provider"] == "echo-provider"
    assert prompt["capability"] == "text-to-text" and prompt["provider_url"] == ECHO
    assert prompt["source"]["kind"] == "path" and prompt["options"] == {"n": 1}
    assert (result["metadata"]["task_id"], result["metadata"]["worker"]) == ("task-1", "w@host")


def test_the_steps_in_order():
    names = [step.__name__ for step in pipeline.STEPS]
    assert names == ["scrub_secrets", "stop_when_interrupted", "validate", "observe", "retry_transient", "hold_deadline",
                     "pin_service", "sign_record", "answer_from_cache", "build_result", "sign_media", "complete_provenance", "serve"]


def test_the_whole_pipeline_on_one_job(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIACONDUIT_HOME", str(tmp_path))
    run = a_run("abc", ECHO, "reverse", {"cache": False})
    result = run_steps(pipeline.STEPS, run)
    assert result["asset"]["content"] == "cba" and isinstance(run.job, Job)
