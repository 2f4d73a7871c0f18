"""Jobs through the HTTP API: created, read, refused with a problem naming the field, isolated per tenant."""

from __future__ import annotations

import json
import uuid

from .conftest import API, PARKED_CAPABILITY, create_key, wait_finished


def test_a_job_is_created_and_read_back_with_its_result(alice: API, echo_url: str, text_worker) -> None:
    created = alice.call("createJob", json={"input": "hello gateway", "provider": echo_url, "model": "upper"})
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] in ("queued", "running", "succeeded")
    assert created.headers["location"] == job["urls"]["get"]
    done = wait_finished(alice, job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["asset"]["content"] == "HELLO GATEWAY"
    assert done["result"]["metadata"]["task_id"] == job["id"]
    assert done["attempts"] == 1 and done["steps"][0]["worker"]
    assert done["created_at"] <= done["completed_at"]
    # the gateway's jobs have a reader: their event streams are written
    from mediaconduit_worker.worker.events import stream_key
    from mediaconduit_worker.worker.redis_state import state_redis

    stream = state_redis().xrange(stream_key(job["id"]))
    assert [(fields["event"], json.loads(fields["data"])) for _, fields in stream] == [
        ("status", {"status": "running", "attempt": 0}), ("output", {"chunk": "HELLO GATEWAY"}),
        ("status", {"status": "succeeded"})]  # a model that cannot stream: its whole text as one chunk


def test_problems_name_the_field_and_value(alice: API, echo_url: str) -> None:
    missing = alice.call("createJob", json={"provider": echo_url, "model": "upper"})
    assert missing.status_code == 422
    assert missing.headers["content-type"].startswith("application/problem+json")
    problem = missing.json()
    assert problem["field"] == "/input" and problem["status"] == 422 and problem["type"].endswith("/invalid")

    unknown = alice.call("createJob", json={"input": "x", "provider": echo_url, "model": "no-such-model"})
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["field"] == "/model" and unknown.json()["value"] == "no-such-model"
    assert "no-such-model" in unknown.json()["detail"]

    extra = alice.call("createJob", json={"input": "x", "provider": echo_url, "model": "upper", "task_id": "mine"})
    assert extra.status_code == 422 and extra.json()["field"] == "/task_id" and extra.json()["value"] == "mine"

    bad_option = alice.call("createJob", json={"input": "x", "provider": echo_url, "model": "echo",
                                               "options": {"prefix": 3}})
    assert bad_option.status_code == 422, bad_option.text
    assert bad_option.json()["field"] == "/options" and "prefix" in bad_option.json()["detail"]


def test_a_key_is_needed_and_a_revoked_key_stops_working(alice: API, gateway) -> None:
    import subprocess
    import sys

    nobody = alice.as_key(None).call("listJobs")
    assert nobody.status_code == 401 and nobody.json()["field"] == "Authorization"
    assert nobody.headers["www-authenticate"].startswith("Bearer")
    tenant = f"carol-{uuid.uuid4().hex[:6]}"
    key = create_key(tenant, "--rpm", "100")
    carol = alice.as_key(key)
    assert carol.call("listJobs").status_code == 200
    listed = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "keys", "list", "--json"],
                            capture_output=True, text=True, check=True).stdout
    assert key not in listed
    rows = [r for r in map(__import__("json").loads, listed.splitlines()) if r["tenant"] == tenant]
    assert len(rows) == 1 and rows[0]["rpm"] == 100
    out = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "keys", "revoke", rows[0]["key_id"]],
                         capture_output=True, text=True)
    assert out.returncode == 0 and rows[0]["key_id"] in out.stdout
    assert carol.call("listJobs").status_code == 401
    again = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "keys", "revoke", rows[0]["key_id"]],
                           capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.startswith("error: no key matches")


def test_another_tenants_job_answers_404(alice: API, bob: API, slow_url: str) -> None:
    job = alice.call("createJob", json={"input": "mine", "provider": slow_url, "model": "parked"}).json()
    for operation in ("getJob", "cancelJob"):
        seen = bob.call(operation, {"job_id": job["id"]})
        assert seen.status_code == 404, seen.text
        assert seen.json()["value"] == job["id"]
    never = bob.call("getJob", {"job_id": str(uuid.uuid4())})
    assert never.status_code == 404 and never.json()["title"] == seen.json()["title"]
    assert job["id"] not in [j["id"] for j in bob.call("listJobs").json()["jobs"]]
    assert alice.call("cancelJob", {"job_id": job["id"]}).json()["status"] == "canceled"
    assert PARKED_CAPABILITY
