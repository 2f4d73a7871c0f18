"""docs/architecture.md stays true to the tree: its module map names every module, and only those."""

from __future__ import annotations

import re
import time

from conftest import REPO

PACKAGE = REPO / "mediaconduit_worker"


def test_the_module_map_names_every_module_and_only_those() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    mapped = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.MULTILINE))
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}
    required = {m for m in modules if "/" not in m or not m.endswith("/__init__.py")}  # a subpackage's may be left out
    assert required <= mapped <= modules, (
        f"missing from the map: {sorted(required - mapped)}; in the map but gone: {sorted(mapped - modules)}")


def _documented(side: str) -> set[str]:
    """The files ``docs/architecture.md`` lists for one side of a warm job (a ``<!-- files: SIDE -->`` block)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(rf"<!-- files: {side} -->(.*?)<!-- end -->", text, re.S)
    assert block, f"docs/architecture.md has no '<!-- files: {side} -->' block"
    return set(re.findall(r"`([\w/]+\.py)`", block.group(1)))


def test_a_warm_jobs_files_are_the_documented_ones(echo_url, tmp_path) -> None:
    """Which of the package's files a warm text-to-text job runs, traced in the producer (this process) and in a
    real worker process (``-P solo``: the whole job in its main thread), from the message's arrival to the
    stored result. The docs list that measured set, not a wish."""
    import json
    import sys
    import uuid

    from conftest import WorkerProcess

    from mediaconduit_worker import transform

    queue = f"trace-{uuid.uuid4().hex[:8]}"
    program = [sys.executable, str(REPO / "tests" / "support" / "traced_worker.py")]
    worker = WorkerProcess(queue=queue, pool="solo", concurrency=1, env={"MEDIACONDUIT_TRACE_DIR": str(tmp_path)},
                           program=program).wait_ready()
    try:
        transform.apply_async(("warm up", echo_url, "upper"), queue=queue).get(timeout=60)
        producer: set[str] = set()
        prefix = str(PACKAGE) + "/"

        def profile(frame, event, arg) -> None:
            if event == "call" and frame.f_code.co_filename.startswith(prefix):
                producer.add(frame.f_code.co_filename[len(prefix):])

        sys.setprofile(profile)
        try:
            job = transform.apply_async(("hello", echo_url, "upper"), queue=queue)
            assert job.get(timeout=60)["asset"]["content"] == "HELLO"
        finally:
            sys.setprofile(None)
        for _ in range(100):  # the trace is written just after the result is stored
            if (tmp_path / f"{job.id}.json").exists():
                break
            time.sleep(0.05)
        in_worker = set(json.loads((tmp_path / f"{job.id}.json").read_text()))
    finally:
        worker.stop()
    assert producer == _documented("producer"), f"a warm job's producer side ran {sorted(producer)}"
    assert in_worker == _documented("worker"), f"a warm job's worker side ran {sorted(in_worker)}"
