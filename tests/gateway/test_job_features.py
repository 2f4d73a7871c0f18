"""What a job can ask for: steps as a chain, Prefer: wait, Idempotency-Key, cancel_after, queue positions,
cancels that stick, listing with a status filter and pages, and the tenant's rpm."""

from __future__ import annotations

import time
import uuid

from .conftest import API, create_key, wait_finished


def test_steps_are_a_chain_and_prefer_wait_returns_the_finished_job(alice: API, echo_url: str, text_worker) -> None:
    created = alice.call("createJob", headers={"Prefer": "wait=30"},
                         json={"input": "abc", "provider": echo_url, "model": "upper",
                               "steps": [{"provider": echo_url, "model": "reverse"},
                                         {"provider": echo_url, "model": "echo", "options": {"prefix": ">"}}]})
    assert created.status_code == 201, created.text
    assert created.headers["preference-applied"] == "wait=30"
    job = created.json()
    assert job["status"] == "succeeded", job
    assert job["result"]["asset"]["content"] == ">CBA"
    assert [s["status"] for s in job["steps"]] == ["succeeded"] * 3
    assert job["id"] == job["steps"][-1]["task_id"] and job["attempts"] == 3


def test_a_failed_step_names_its_culprit(alice: API, slow_url: str, text_worker) -> None:
    job = alice.call("createJob", headers={"Prefer": "wait=30"},
                     json={"input": "x", "provider": slow_url, "model": "sleep", "options": {"seconds": -1}}).json()
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "ProviderExecutionError" and "ValueError" in job["error"]["message"]
    assert "non-negative" in job["error"]["message"]
    assert job["result"] is None and job["completed_at"]


def test_an_idempotency_key_returns_the_same_job(alice: API, echo_url: str, text_worker) -> None:
    key = uuid.uuid4().hex
    body = {"input": "once", "provider": echo_url, "model": "upper"}
    first = alice.call("createJob", headers={"Idempotency-Key": key}, json=body)
    again = alice.call("createJob", headers={"Idempotency-Key": key}, json=body)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = alice.call("createJob", headers={"Idempotency-Key": key}, json={**body, "input": "twice"})
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    ids = [j["id"] for j in alice.call("listJobs", params={"limit": 100}).json()["jobs"]]
    assert ids.count(first.json()["id"]) == 1
    assert wait_finished(alice, first.json()["id"])["result"]["asset"]["content"] == "ONCE"


def test_queued_jobs_show_their_position_and_a_cancel_sticks(alice: API, slow_url: str) -> None:
    """Jobs of a capability no worker serves stay queued: 1, 2, 3 in their queue; the cancelled one is
    REVOKED at once and the others move up."""
    jobs = [alice.call("createJob", json={"input": str(i), "provider": slow_url, "model": "parked"}).json()
            for i in range(3)]
    positions = [alice.call("getJob", {"job_id": j["id"]}).json()["queue_position"] for j in jobs]
    assert positions[1] == positions[0] + 1 and positions[2] == positions[0] + 2, positions
    cancelled = alice.call("cancelJob", {"job_id": jobs[0]["id"]})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "canceled"
    assert cancelled.json()["error"]["message"]
    moved = alice.call("getJob", {"job_id": jobs[1]["id"]}).json()
    assert moved["status"] == "queued" and moved["queue_position"] == positions[1]  # still in the queue: it is skipped when taken
    finished = alice.call("cancelJob", {"job_id": jobs[0]["id"]})
    assert finished.status_code == 409 and finished.json()["job_status"] == "canceled"
    for j in jobs[1:]:
        assert alice.call("cancelJob", {"job_id": j["id"]}).json()["status"] == "canceled"


def test_a_running_job_is_cancelled(alice: API, slow_url: str, text_worker) -> None:
    job = alice.call("createJob", json={"input": "long", "provider": slow_url, "model": "sleep",
                                        "options": {"seconds": 60}}).json()
    for _ in range(600):
        if alice.call("getJob", {"job_id": job["id"]}).json()["status"] == "running":
            break
        time.sleep(0.1)
    out = alice.call("cancelJob", {"job_id": job["id"]})
    assert out.status_code == 200, out.text
    done = wait_finished(alice, job["id"], timeout=60)
    assert done["status"] == "canceled", done
    assert "HTTP API" in done["error"]["message"]


def test_cancel_after_cancels_a_running_job_at_its_deadline(alice: API, slow_url: str, text_worker) -> None:
    job = alice.call("createJob", json={"input": "late", "provider": slow_url, "model": "sleep",
                                        "options": {"seconds": 60}, "cancel_after": 3}).json()
    done = wait_finished(alice, job["id"], timeout=90)
    assert done["status"] == "canceled", done
    assert "cancel_after" in done["error"]["message"]


def test_cancel_after_expires_a_job_no_worker_started(alice: API, slow_url: str) -> None:
    job = alice.call("createJob", json={"input": "never", "provider": slow_url, "model": "parked",
                                        "cancel_after": 1}).json()
    done = wait_finished(alice, job["id"], timeout=60)
    assert done["status"] in ("canceled", "expired"), done


def test_the_list_is_filtered_by_status_and_paged(gateway, openapi, echo_url: str, slow_url: str, text_worker) -> None:
    dave = API(gateway.url, create_key(f"dave-{uuid.uuid4().hex[:6]}"), openapi)
    done = [dave.call("createJob", headers={"Prefer": "wait=30"},
                      json={"input": f"n{i}", "provider": echo_url, "model": "upper"}).json()["id"] for i in range(5)]
    parked = dave.call("createJob", json={"input": "p", "provider": slow_url, "model": "parked"}).json()["id"]
    seen: list[str] = []
    page = dave.call("listJobs", params={"limit": 2}).json()
    while True:
        seen += [j["id"] for j in page["jobs"]]
        assert len(page["jobs"]) <= 2
        if not page["next"]:
            break
        page = dave.http.get(page["next"], headers={"Authorization": f"Bearer {dave.key}"}).json()
    assert seen == [parked, *reversed(done)]
    queued = dave.call("listJobs", params={"status": "queued"}).json()["jobs"]
    assert [j["id"] for j in queued] == [parked]
    assert {j["status"] for j in dave.call("listJobs", params={"status": "succeeded"}).json()["jobs"]} == {"succeeded"}
    bad = dave.call("listJobs", params={"status": "done"})
    assert bad.status_code == 422 and bad.json()["field"] == "status" and bad.json()["value"] == "done"
    dave.call("cancelJob", {"job_id": parked})


def test_a_tenants_rpm_is_held(gateway, openapi, slow_url: str) -> None:
    erin = API(gateway.url, create_key(f"erin-{uuid.uuid4().hex[:6]}", "--rpm", "3"), openapi)
    answers = [erin.call("createJob", json={"input": "r", "provider": slow_url, "model": "parked"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1 and answers[-1].json()["field"] == "rpm"
    for a in answers[:3]:
        erin.call("cancelJob", {"job_id": a.json()["id"]})


def test_a_webhook_job_hands_its_start_output_and_completion_to_the_outbox(alice: API, echo_url: str,
                                                                          text_worker) -> None:
    """The webhook is stored before the job is sent, so even a job that starts at once has its ``start``."""
    from mediaconduit_worker.worker.events import OUTBOX
    from mediaconduit_worker.worker.redis_state import state_redis

    created = alice.call("createJob", json={"input": "hook", "provider": echo_url, "model": "upper",
                                            "webhook": "https://hooks.example/receive"})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert wait_finished(alice, job_id)["status"] == "succeeded"
    sent = [fields["event"] for _, fields in state_redis().xrange(OUTBOX) if fields["task_id"] == job_id]
    assert sent == ["start", "output", "completed"]  # the default filter: every webhook event
