"""Batches through real workers: groups, chains, resume by deterministic ids, per-item failures, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

BAD_INPUT = {"not": "an asset"}  # the worker rejects it: one failing item


def test_group_reports_failures_per_item_and_resumes(text_worker, echo_url):
    from mediaconduit_worker.batch import Batch

    batch = Batch.of(echo_url, "upper")
    for i in range(40):
        batch.add(f"item {i}", key=i)
    bad = batch.add(BAD_INPUT, key="bad")
    run = batch.submit(summary=True)
    assert run.sent == 41
    seen = []
    results = {r.id: r for r in run.iter_results(timeout=120, on_progress=seen.append)}
    assert len(results) == 41
    assert seen[-1].done == 40 and seen[-1].failed == 1 and seen[-1].total == 41
    assert results[bad.id].status == "FAILURE" and "input asset has unknown type" in results[bad.id].error
    for job in batch.jobs.values():
        if job is not bad:
            assert results[job.id].result["asset"]["content"] == f"ITEM {job.keys[0]}"
    summary = run.summary(timeout=60)
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (41, 40, 1)
    assert "input asset has unknown type" in summary["failures"][bad.id]

    again = Batch.of(echo_url, "upper")
    for i in range(40):
        again.add(f"item {i}")
    again.add(BAD_INPUT)
    rerun = again.submit()
    assert rerun.sent == 0  # finished and failed jobs are not sent again
    assert sorted(r.status for r in rerun.results(timeout=30)).count("SUCCESS") == 40
    assert again.submit(retry_failed=True).sent == 1


def test_pipeline_chains_steps_and_resumes_after_the_last_finished_step(text_worker, echo_url):
    from mediaconduit_worker.batch import Batch, Step

    steps = [Step(echo_url, "upper"), Step(echo_url, "reverse"), Step(echo_url, "echo", {"prefix": "> "})]
    batch = Batch(steps)
    for word in ["abc", "hello", "pipeline"]:
        batch.add(word)
    results = batch.submit().results(timeout=120)
    assert sorted(r.result["asset"]["content"] for r in results) == ["> CBA", "> ENILEPIP", "> OLLEH"]
    prompt = next(r for r in results if r.result["asset"]["content"] == "> CBA").result["metadata"]["generation_prompt"]
    assert prompt["model_id"] == "echo"

    # Lose the last step's result: a re-run sends only that step, fed the stored middle result.
    job = next(iter(batch.jobs.values()))
    batch.app.backend.forget(job.id)
    rerun = Batch(steps)
    for word in ["abc", "hello", "pipeline"]:
        rerun.add(word)
    run = rerun.submit()
    assert run.sent == 1
    assert len(run.results(timeout=60)) == 3
    assert batch.app.AsyncResult(job.ids[1]).state == "SUCCESS"


def test_queued_jobs_of_an_interrupted_run_are_not_sent_twice(echo_url, redis_server):
    """No worker serves text-to-video: the jobs stay queued, as after a producer killed mid-run."""
    import redis

    from mediaconduit_worker.batch import Batch
    from mediaconduit_worker.celery_app import app

    client = redis.Redis.from_url(app.conf.broker_url)
    client.delete("text-to-video")
    batch = Batch.of(echo_url, "echo", {"capability": "text-to-video"})
    for i in range(25):
        batch.add(f"queued {i}")
    assert batch.submit().sent == 25
    assert batch.submit().sent == 0
    assert client.llen("text-to-video") == 25
    progress = batch.submit().refresh()
    assert (progress.queued, progress.done) == (25, 0)
    client.delete("text-to-video")


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_batch_reports_bad_lines_and_resumes(text_worker, echo_url, tmp_path):
    from mediaconduit_worker.cli import main

    inp = _jsonl(tmp_path / "in.jsonl", [
        json.dumps("one"),
        "{not json",
        json.dumps({"input": "two", "options": {"prefix": "* "}, "id": "second"}),
        "",
        "42",
        json.dumps({"input": "three", "options": "prefix"}),
        json.dumps(BAD_INPUT | {"input": {"oops": 1}}),
        json.dumps("four"),
    ])
    out = tmp_path / "results.jsonl"
    args = ["batch", str(inp), "--provider", echo_url, "--model", "upper", "--out", str(out)]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 1, res.output  # an item failed and lines were skipped: scripts see it
    assert res.output.splitlines()[-1] == f"error: 1 of 4 jobs failed, 3 of 7 lines were skipped (see above and {out})"
    assert "line 2: not JSON" in res.output
    assert "line 5: expected a string" in res.output
    assert "line 6: 'options' must be a JSON object" in res.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_line = {r["keys"][0]["line"]: r for r in records}
    assert sorted(by_line) == [1, 3, 7, 8]
    assert by_line[1]["result"]["asset"]["content"] == "ONE"
    assert by_line[3]["result"]["asset"]["content"] == "* TWO" and by_line[3]["keys"][0]["id"] == "second"
    assert by_line[7]["status"] == "FAILURE" and "input asset has unknown type" in by_line[7]["error"]
    assert "line 7: " in res.output

    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 1, again.output  # the failure and the bad lines are still there
    assert "sent 0," in again.output and "skipped (already in results.jsonl) 4" in again.output
    assert len(out.read_text().splitlines()) == 4

    out.unlink()  # results only in the backend now: nothing is sent, the file is written again
    third = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "sent 0," in third.output and len(out.read_text().splitlines()) == 4


def test_cli_batch_refuses_bad_input_before_queueing(echo_url, tmp_path):
    from mediaconduit_worker.cli import main

    good = _jsonl(tmp_path / "in.jsonl", [json.dumps("x")])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    out = tmp_path / "out.jsonl"
    base = ["--provider", echo_url, "--model", "echo", "--out", str(out)]
    cases = {
        "is empty": ["batch", str(empty), *base],
        "--options: not JSON": ["batch", str(good), *base, "--options", "{prefix: 1}"],
        "must be a JSON object": ["batch", str(good), *base, "--options", "[1, 2]"],
        "unknown capability 'text-to-smell'": ["batch", str(good), *base, "--capability", "text-to-smell"],
        "has no model 'nope'": ["batch", str(good), "--provider", echo_url, "--model", "nope", "--out", str(out)],
        "no valid items": ["batch", str(_jsonl(tmp_path / "bad.jsonl", ["{", "[]"])), *base],
    }
    for message, args in cases.items():
        res = CliRunner().invoke(main, args)
        assert res.exit_code != 0 and message in res.output, (message, res.output)
    assert not out.exists()


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_items_that_cannot_be_sent_fail_alone_and_the_rest_runs(text_worker, echo_url):
    """A lone surrogate (job ids hash the UTF-8 of the input) or a 100,000-deep input used to abort the
    whole batch; now each is one failed item, reported like any other and never queued."""
    from mediaconduit_worker.batch import Batch

    batch = Batch.of(echo_url, "upper")
    good = [batch.add(f"fine {i}", key=i) for i in range(3)]
    surrogate = batch.add("broken \ud800 text", key="surrogate")
    deep = batch.add(_nested(100_000), key="deep")
    deep_options = batch.add("x", {"nested": _nested(300)}, key="options")
    run = batch.submit(summary=True)
    assert run.sent == 3
    results = {r.key: r for r in run.results(timeout=120)}
    assert [results[j.keys[0]].result["asset"]["content"] for j in good] == ["FINE 0", "FINE 1", "FINE 2"]
    assert "input holds a lone surrogate '\\ud800'" in results["surrogate"].error
    assert "nests deeper than 200" in results["deep"].error and "options.nested" in results["options"].error
    assert results["deep"].as_json()["status"] == "FAILURE"
    summary = run.summary(timeout=60)
    assert (summary["succeeded"], summary["failed"]) == (3, 3) and surrogate.id in summary["failures"]
    assert deep.id != deep_options.id
    again = Batch.of(echo_url, "upper")
    again.add("broken \ud800 text")
    assert again.submit(retry_failed=True).sent == 0  # still refused, still the same id


def test_cli_batch_reports_unreadable_lines_and_runs_the_rest(text_worker, echo_url, tmp_path):
    from mediaconduit_worker.cli import main

    inp = _jsonl(tmp_path / "in.jsonl", [
        json.dumps("first"),
        '"lone \\ud800 surrogate"',
        "[" * 100_000 + "]" * 100_000,
        json.dumps({"input": {"type": "image", "uri": "file:///proc/self/environ"}}),
        json.dumps("last"),
    ])
    out = tmp_path / "results.jsonl"
    res = CliRunner().invoke(main, ["batch", str(inp), "--provider", echo_url, "--model", "upper", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 1, res.output
    assert res.output.splitlines()[-1] == f"error: 0 of 2 jobs failed, 3 of 5 lines were skipped (see above and {out})"
    assert "line 2: input holds a lone surrogate" in res.output
    assert "line 3: nested too deeply to read" in res.output
    assert "line 4: input field 'uri': file paths and file:// URLs are not accepted" in res.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["result"]["asset"]["content"] for r in records) == ["FIRST", "LAST"]


def test_a_job_the_broker_lost_is_found_and_sent_again(echo_url, redis_server):
    """A worker or Redis stopping while a BRPOP reply is in flight loses that message (broker/README.md):
    here one job's message is taken out of its queue, as such a reply leaves things. The batch waiting for
    it finds it in no queue and no worker's hands, twice, and sends it again; every job ends once."""
    import redis
    from conftest import WorkerProcess

    from mediaconduit_worker.batch import Batch
    from mediaconduit_worker.celery_app import app

    client = redis.Redis.from_url(app.conf.broker_url)
    queue = "text-to-3d"  # served by no other test's worker
    client.delete(queue)
    batch = Batch.of(echo_url, "echo", {"capability": queue})
    for i in range(12):
        batch.add(f"lost {i}")
    run = batch.submit(resume=False)
    victim = client.lrange(queue, 0, -1)[5]
    victim_id = json.loads(victim)["headers"]["id"]
    assert client.lrem(queue, 1, victim) == 1
    worker = WorkerProcess([queue]).wait_ready()
    try:
        results = list(run.iter_results(poll_interval=0.2, timeout=120, lost_after=1.0))
    finally:
        worker.stop()
    assert run.resent == [victim_id]
    assert sorted((r.status, r.result["asset"]["content"]) for r in results) == sorted(
        ("SUCCESS", f"lost {i}") for i in range(12))
    held = [k for k in client.scan_iter(f"mediaconduit:inflight:*|{queue}") if client.llen(k)]  # workers' in-flight lists
    assert client.llen(queue) == 0 and not held
    assert worker.log.read_text().count(victim_id) >= 1
