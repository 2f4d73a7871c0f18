"""Secrets and sizes a probe cannot check by its error alone: what the result backend holds in each
state a job passes through (STARTED, RETRY, FAILURE, REVOKED, a time limit, a lost worker process),
the worker's events and logs, messages from producers other than ours, the producer's size check,
and credentials in a provider URL. The models of the leaky provider (``conftest.py``) mishandle their
options the way real provider code does; those that succeed return a digest of the options they got,
which proves the task still received the real values."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import MIRRORS, RUN_DIR
from support.adversarial import ADVERSARIAL, adversarial
from support.remote import QueueWorker

from mediaconduit_worker import InvalidInputError
from mediaconduit_worker.redaction import REDACTED

from .conftest import CANARY_OPTION, WORKER_MAX_JOB_BYTES, leaked, options_digest

SECRET_OPTIONS = {"api_key": CANARY_OPTION, "note": f"Bearer {CANARY_OPTION}", "max_tokens": 9}


def raw_meta(task_id: str) -> bytes:
    from mediaconduit_worker.celery_app import app

    return app.backend.client.get(app.backend.get_key_for_task(task_id)) or b""


def wait_for_state(task_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
    """The stored meta once it reaches ``state``; every version seen on the way is checked for canaries."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = raw_meta(task_id)
        assert not leaked(raw.decode(errors="replace")), raw[:2000]
        if raw and json.loads(raw)["status"] == state:
            return json.loads(raw)
        time.sleep(0.05)
    raise AssertionError(f"{task_id} never reached {state}; last: {raw_meta(task_id)[:500]!r}")


def submit(worker: QueueWorker, *args: Any, **options: Any) -> Any:
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app

    try:
        return transform.apply_async(args, queue=worker.queue, **options)
    finally:
        app.amqp.queues.pop(worker.queue, None)


def assert_clean(task_id: str, worker: QueueWorker) -> None:
    raw = raw_meta(task_id).decode()
    assert raw and not leaked(raw), raw[:2000]
    assert not leaked(worker.log_text())


def test_started_and_success_hold_redacted_arguments_while_the_model_gets_the_real_ones(attacked_worker, leaky_url):
    options = {**SECRET_OPTIONS, "seconds": 1.5}
    r = submit(attacked_worker, "x", leaky_url, "slow", options)
    started = wait_for_state(r.id, "STARTED")
    assert started["args"][3]["api_key"] == REDACTED and started["args"][3]["note"] == REDACTED
    assert started["args"][3]["max_tokens"] == 9
    result = r.get(timeout=60)
    assert result["asset"]["content"] == f"x options-sha256={options_digest(options)}"
    assert json.loads(raw_meta(r.id))["args"][3]["api_key"] == REDACTED
    assert_clean(r.id, attacked_worker)


def test_failure_message_and_traceback_are_scrubbed(attacked_worker, leaky_url):
    r = submit(attacked_worker, "x", leaky_url, "leak", SECRET_OPTIONS)
    with pytest.raises(Exception, match="upstream rejected the request made with options") as err:
        r.get(timeout=60)
    assert not leaked(str(err.value)) and REDACTED in str(err.value)
    meta = wait_for_state(r.id, "FAILURE")
    assert meta["result"]["exc_type"] == "ProviderExecutionError"
    assert "RuntimeError: upstream rejected" in meta["traceback"] and "LeakyModel" not in meta["traceback"].split("\n")[0]
    assert_clean(r.id, attacked_worker)


def test_retry_states_and_the_final_failure_are_scrubbed(attacked_worker, leaky_url):
    options = {**SECRET_OPTIONS, "wait": 0.2}
    r = submit(attacked_worker, "x", leaky_url, "flaky", options)
    retry = wait_for_state(r.id, "RETRY")
    assert "rate limited" in json.dumps(retry) and retry["args"][3]["api_key"] == REDACTED
    with pytest.raises(Exception, match="rate limited; options were") as err:
        r.get(timeout=60)
    assert not leaked(str(err.value))
    assert_clean(r.id, attacked_worker)


def test_revoked_state_holds_no_secret(attacked_worker, leaky_url):
    from mediaconduit_worker.celery_app import app

    r = submit(attacked_worker, "x", leaky_url, "slow", {**SECRET_OPTIONS, "seconds": 30})
    wait_for_state(r.id, "STARTED")
    app.control.revoke(r.id, terminate=True, signal="SIGKILL")
    revoked = wait_for_state(r.id, "REVOKED")
    assert revoked["args"][3]["api_key"] == REDACTED
    assert_clean(r.id, attacked_worker)


def test_hard_time_limit_failure_holds_no_secret(attacked_worker, leaky_url):
    """The slow model swallows the soft limit, so the worker's main process ends the job (and stores it)."""
    r = submit(attacked_worker, "x", leaky_url, "slow", {**SECRET_OPTIONS, "seconds": 30}, soft_time_limit=1,
               time_limit=2)
    with pytest.raises(Exception, match="TimeLimitExceeded"):
        r.get(timeout=60)
    meta = wait_for_state(r.id, "FAILURE")
    assert meta["result"]["exc_type"] == "TimeLimitExceeded" and meta["args"][3]["api_key"] == REDACTED
    assert_clean(r.id, attacked_worker)


def test_a_lost_worker_process_stores_a_redacted_retry_and_resends_the_real_options(attacked_worker, leaky_url):
    options = {**SECRET_OPTIONS, "seconds": 2}
    r = submit(attacked_worker, "x", leaky_url, "slow", options)
    pid = wait_for_state(r.id, "STARTED")["result"]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for_state(r.id, "RETRY")["args"][3]["api_key"] == REDACTED
    assert r.get(timeout=60)["asset"]["content"] == f"x options-sha256={options_digest(options)}"
    assert_clean(r.id, attacked_worker)


def test_a_model_that_logs_its_options_leaves_no_secret_in_the_log(attacked_worker, leaky_url):
    r = submit(attacked_worker, "x", leaky_url, "log", SECRET_OPTIONS)
    r.get(timeout=60)
    log = attacked_worker.log_text()
    assert "calling upstream with" in log and not leaked(log)


@contextmanager
def worker_events() -> Iterator[list[dict[str, Any]]]:
    """Events from the workers while the block runs (a receiver on the broker's event exchange)."""
    from mediaconduit_worker.celery_app import app

    events: list[dict[str, Any]] = []
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": events.append})
        thread = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=None, wakeup=False), daemon=True)
        thread.start()
        try:
            yield events
        finally:
            receiver.should_stop = True
            thread.join(10)


def test_a_message_from_another_producer_is_redacted_in_events_and_backend(attacked_worker, leaky_url, echo_url):
    """A message whose own ``argsrepr`` shows the raw arguments, as another language's client may send."""
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.app import TRANSFORM_TASK

    with worker_events() as events:
        deadline = time.monotonic() + 30
        while not any(e.get("type") == "task-received" for e in events):  # the receiver is bound
            assert time.monotonic() < deadline, "no worker event arrived"
            submit(attacked_worker, "warm-up", echo_url, "upper").get(timeout=30)
        args = ["x", leaky_url, "leak", SECRET_OPTIONS]
        r = app.send_task(TRANSFORM_TASK, args=args, queue=attacked_worker.queue, argsrepr=repr(args))
        with pytest.raises(Exception, match="upstream rejected"):
            r.get(timeout=60)
        time.sleep(1)
    mine = [e for e in events if e.get("uuid") == r.id and e.get("type") != "task-sent"]
    assert {"task-received", "task-started", "task-failed"} <= {e["type"] for e in mine}, mine
    assert not leaked(json.dumps(mine)), mine
    received = next(e for e in mine if e["type"] == "task-received")
    assert REDACTED in received["args"] and "leak" in received["args"]
    assert_clean(r.id, attacked_worker)


def test_a_message_too_large_for_the_worker_fails_without_being_stored(attacked_worker, echo_url):
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.app import TRANSFORM_TASK

    big = "x" * (WORKER_MAX_JOB_BYTES + 1000)
    r = app.send_task(TRANSFORM_TASK, args=[big, echo_url, "upper", {"api_key": CANARY_OPTION}],
                      queue=attacked_worker.queue)
    with pytest.raises(InvalidInputError, match=r"bytes of JSON, more than MEDIACONDUIT_MAX_JOB_BYTES allows \(1,048,576\)"):
        r.get(timeout=60)
    raw = raw_meta(r.id)
    assert len(raw) < 5000 and b"too large to run" in raw
    assert_clean(r.id, attacked_worker)
    assert submit(attacked_worker, "still serving", echo_url, "upper").get(timeout=60)["asset"]["content"] == "STILL SERVING"


def test_the_producer_refuses_a_100_mb_input_before_anything_is_queued(echo_url):
    """Through ``apply_async`` and through ``send_task`` (what Flower's send-task API calls)."""
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.app import TRANSFORM_TASK

    queue = f"nobody-{uuid.uuid4().hex[:6]}"
    huge = "x" * 100_000_000
    for send in (lambda: transform.apply_async((huge, echo_url, "upper", {}), queue=queue),
                 lambda: app.send_task(TRANSFORM_TASK, args=[huge, echo_url, "upper", {}], queue=queue)):
        started = time.monotonic()
        with pytest.raises(InvalidInputError, match=r"is 100,000,\d{3} bytes of JSON, more than MEDIACONDUIT_MAX_JOB_BYTES"):
            send()
        assert time.monotonic() - started < 10
    app.amqp.queues.pop(queue, None)
    assert app.backend.client.llen(queue) == 0


@pytest.fixture(scope="module")
def credentials_worker() -> Iterator[QueueWorker]:
    """A worker whose git reaches the test mirrors also through URLs with credentials in them."""
    gitconfig = RUN_DIR / f"gitconfig-credentials-{uuid.uuid4().hex[:6]}"
    shutil.copy(os.environ["GIT_CONFIG_GLOBAL"], gitconfig)
    with open(gitconfig, "a") as fh:
        fh.write(f'[url "file://{MIRRORS}/"]\n\tinsteadOf = https://mc-user:{CANARY_OPTION}@github.com/\n')
    worker = QueueWorker(f"security-credentials-{uuid.uuid4().hex[:6]}", {"GIT_CONFIG_GLOBAL": str(gitconfig)},
                         drop=["MEDIACONDUIT_PROVIDER_ALLOW"])
    worker.wait_ready()
    yield worker
    worker.stop()


def test_credentials_in_a_provider_url_are_used_but_never_shown(credentials_worker, echo_url):
    provider = echo_url.replace("https://", f"https://mc-user:{CANARY_OPTION}@")
    r = submit(credentials_worker, "hello", provider, "upper")
    result = r.get(timeout=120)
    assert result["asset"]["content"] == "HELLO"
    assert result["metadata"]["generation_prompt"]["provider_url"] == f"https://{REDACTED}@github.com/MediaConduit/echo-provider"
    assert not leaked(json.dumps(result))
    assert_clean(r.id, credentials_worker)
    bad = submit(credentials_worker, "hello", provider.replace("echo-provider", "no-such-provider"), "upper")
    with pytest.raises(Exception, match="no-such-provider") as err:
        bad.get(timeout=120)
    assert not leaked(str(err.value))
    assert_clean(bad.id, credentials_worker)


def test_a_message_nested_100000_deep_from_elsewhere_does_not_take_the_worker_down(attacked_worker, echo_url):
    """No producer of ours can even encode it: a raw message, as another client could publish."""
    from mediaconduit_worker.celery_app import app

    task_id = str(uuid.uuid4())
    body = "[[" + "[" * 100_000 + "]" * 100_000 + ', "x", "y", {}], {}, {}]'
    headers = {"lang": "py", "task": "mediaconduit.transform", "id": task_id, "root_id": task_id, "retries": 0,
               "timelimit": [None, None], "argsrepr": "", "kwargsrepr": "{}", "origin": "elsewhere"}
    with app.producer_or_acquire() as producer:
        producer.publish(body, routing_key=attacked_worker.queue, exchange="", serializer=None,
                         content_type="application/json", content_encoding="utf-8", headers=headers)
    deadline = time.monotonic() + 30
    while task_id not in attacked_worker.log_text():  # logged as a message it cannot decode, and dropped
        assert time.monotonic() < deadline, attacked_worker.log_text()[-3000:]
        time.sleep(0.2)
    assert attacked_worker.proc.poll() is None
    assert submit(attacked_worker, "still serving", echo_url, "upper").get(timeout=60)["asset"]["content"] == "STILL SERVING"


def test_adversarial_inputs_run_in_linear_time_and_the_worker_serves_the_next_job(attacked_worker, echo_url):
    """A job holding 900 KiB that looks like the start of a secret again and again, for each shape (the
    worker's cap is 1 MiB of JSON): the producer, the worker's main process and its pool redact it, the
    job completes, and the worker serves the next job. A quadratic pattern took hours on each."""
    texts = {shape: adversarial(shape, 900 * 1024) for shape in ADVERSARIAL}
    sent = {shape: submit(attacked_worker, text, echo_url, "upper", {"api_key": CANARY_OPTION})
            for shape, text in texts.items()}
    for shape, r in sent.items():
        result = r.get(timeout=300)
        assert result["asset"]["content"] == texts[shape].upper(), shape
        assert_clean(r.id, attacked_worker)
    assert submit(attacked_worker, "still serving", echo_url, "upper").get(timeout=60)["asset"]["content"] == "STILL SERVING"


#: Credential names a job's options once carried into the backend and the generation prompt.
PLURAL_AND_COMPOUND_NAMES = ["passwords", "tokens", "access_tokens", "passcode", "sessionid", "otp", "pin", "jwt"]


def test_plural_and_compound_credential_names_reach_neither_the_backend_nor_the_prompt(attacked_worker, echo_url):
    """Values that look like nothing (only their names say they are secrets) beside ``max_tokens``, which
    stays visible; the backend's stored meta and the worker's log are read for the values."""
    plain = f"plain{uuid.uuid4().hex}"
    options = {**dict.fromkeys(PLURAL_AND_COMPOUND_NAMES, plain), "max_tokens": 64}
    r = submit(attacked_worker, "x", echo_url, "upper", options)
    result = r.get(timeout=60)
    assert result["asset"]["content"] == "X"
    assert result["metadata"]["generation_prompt"]["options"] == {
        **dict.fromkeys(PLURAL_AND_COMPOUND_NAMES, REDACTED), "max_tokens": 64}
    raw = raw_meta(r.id).decode()
    assert plain not in raw and '"max_tokens": 64' in raw
    assert plain not in attacked_worker.log_text()
