"""I/O pools: one command running a thread pool per core beside a prefork pool, and a 256-thread worker whose
first jobs for three providers arrive at once (two pip-installing git providers, one Docker provider)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from conftest import RUN_DIR
from support.remote import QueueWorker

DEP_PROVIDER = """
import time
from pathlib import Path
import {module}
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text

with open({counter!r}, "a") as fh:  # one line per import of this module: per load
    fh.write("loaded\\n")
time.sleep(0.5)  # a slow import widens the window in which 256 threads could race to load it twice


class Model(TextToTextModel):
    def transform(self, input, options=None):
        return Text.from_string({module}.VALUE + ":" + input_text(input))


class Provider(MediaProvider):
    model_classes = {{MediaCapability.TEXT_TO_TEXT: Model}}
"""


def wheel(folder: Path, name: str, version: str = "1.0") -> None:
    """A pure-Python wheel ``name`` whose module holds ``VALUE = name`` (pip installs it from ``folder``)."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VALUE = {name!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)


def test_plans_split_an_io_pool_over_processes_and_name_each_node():
    from mediaconduit_worker.worker.pools import PoolPlan, node_names, plan_pools

    plans = plan_pools(["text-to-text", "image-to-image"], "mediaconduit", None, None, processes=3)
    assert plans == [PoolPlan("threads", ("text-to-text",), 128, 3), PoolPlan("prefork", ("image-to-image", "mediaconduit"), None)]
    assert [p.concurrency for p in plans[0].per_process()] == [43, 43, 43]  # 128 slots, rounded up
    assert node_names("w@h", plans) == [["w-threads-1@h", "w-threads-2@h", "w-threads-3@h"], ["w-prefork@h"]]
    assert node_names(None, plans) == [[f"text-to-text-{i}@%h" for i in (1, 2, 3)], ["image-to-image+mediaconduit@%h"]]
    # never more processes than slots; one process keeps the given name; prefork's processes are its -c
    (one,) = plan_pools(["text-to-text"], None, "gevent", 1, processes=4)
    assert (one.processes, node_names("w@h", [one])) == (1, [["w@h"]])
    assert plan_pools(["text-to-text"], None, "prefork", 4, processes=3) == [PoolPlan("prefork", ("text-to-text",), 4)]


def test_a_mixed_command_runs_a_thread_pool_per_core_and_a_prefork_pool():
    from mediaconduit_worker.celery_app import app
    from mediaconduit_worker.worker.pools import IO_CONCURRENCY, IO_PROCESSES
    from mediaconduit_worker.worker.status import cluster_status, wait_for_workers

    name = f"mixed-{uuid.uuid4().hex[:6]}"
    host = socket.gethostname()
    log = RUN_DIR / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-m", "mediaconduit_worker.cli", "worker", "--capability", "text-to-text",
                             "--capability", "image-to-image", "-n", f"{name}@%h"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    threads = [f"{name}-threads@{host}"] if IO_PROCESSES == 1 else [
        f"{name}-threads-{i}@{host}" for i in range(1, IO_PROCESSES + 1)]
    nodes = [*threads, f"{name}-prefork@{host}"]
    try:
        wait_for_workers(app, destination=nodes, timeout=90, alive=lambda: proc.poll() is None)
        seen = {w["worker"]: w for w in cluster_status(app, 1.5) if w["worker"] in nodes}
        for node in threads:
            assert seen[node]["pool"] == "threads" and seen[node]["queues"] == ["text-to-text"]
        assert sum(seen[node]["concurrency"] for node in threads) >= IO_CONCURRENCY
        assert seen[nodes[-1]]["pool"] == "prefork" and seen[nodes[-1]]["queues"] == ["image-to-image", "mediaconduit"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    assert log.read_text().count("Warm shutdown") == len(nodes)  # the command stopped every process


@pytest.mark.docker
def test_first_jobs_for_three_providers_at_once_load_install_and_start_each_once(
        make_provider, provider_urls, tmp_path):
    from celery import group

    from mediaconduit_worker import transform

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tag = uuid.uuid4().hex[:6]
    urls, counters = {}, {}
    for name in ("alpha", "beta"):
        dep = f"mc-dep-{name}-{tag}"
        wheel(wheels, dep)
        counters[name] = tmp_path / f"{name}.loads"
        manifest = {"id": f"dep-{name}", "name": name, "capabilities": ["text-to-text"], "main": "provider.py",
                    "models": [{"id": "m"}], "dependencies": {dep: "==1.0"}}
        code = DEP_PROVIDER.format(module=dep.replace("-", "_"), counter=str(counters[name]))
        urls[name] = make_provider(f"dep-{name}", manifest, {"provider.py": code})
    env = {"PIP_FIND_LINKS": str(wheels), "PIP_NO_INDEX": "1"}
    worker = QueueWorker(f"first-load-{tag}", env, pool="threads", concurrency=256).wait_ready()
    try:
        jobs = ([(f"a{i}", urls["alpha"], "m") for i in range(110)] + [(f"b{i}", urls["beta"], "m") for i in range(110)]
                + [(f"c{i}", provider_urls["cowsay"], "cowsay-default") for i in range(20)])
        started = time.monotonic()
        results = group(transform.s(*job).set(queue=worker.queue) for job in jobs).apply_async().get(timeout=300)
        log = worker.log_text()
    finally:
        worker.stop()
    assert len(results) == 240 and time.monotonic() - started < 300
    for (text, url, _), result in zip(jobs, results):
        content = result["asset"]["content"]
        if url == provider_urls["cowsay"]:
            assert text in content and "(__)" in content
        else:
            assert content == f"mc-dep-{'alpha' if url == urls['alpha'] else 'beta'}-{tag}:{text}"
    assert {name: c.read_text().count("loaded") for name, c in counters.items()} == {"alpha": 1, "beta": 1}
    for dep in (f"mc-dep-alpha-{tag}==1.0", f"mc-dep-beta-{tag}==1.0"):
        assert log.count(f"installing {dep} for provider") == 1
    for provider in ("dep-alpha", "dep-beta", "cowsay-docker-provider"):
        assert log.count(f"loaded provider {provider} from") == 1
    assert log.count("service cowsay-service: started container") + log.count("service cowsay-service: attached to running") == 1
    assert "Traceback" not in log
