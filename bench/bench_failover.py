"""Redis failover: jobs per second and jobs lost when the primary dies, with Redis' asynchronous
replication and with ``MEDIACONDUIT_WAIT_REPLICAS=1``, on a real primary, one replica and three Sentinels.

For each mode, in one run: the throughput of a burst with no failover (what ``WAIT`` costs), then a burst
during which the primary is SIGKILLed once a third is published and started again 3 s after a replica
was promoted. A producer process publishes everything at once and then waits for every result.

    python bench/bench_failover.py [--jobs 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import isolated_environment, row, stop_process
from support.sentinel import ReplicationGroup

HOME = isolated_environment()
PROVIDER = '''
from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text

class Count(TextToTextModel):
    def transform(self, input, options=None):
        with open(options["log"], "a") as fh:  # one line per execution, to count runs
            fh.write(input_text(input) + "\\n")
        return Text.from_string(input_text(input) + "+")

class CountProvider(MediaProvider):
    model_classes = {MediaCapability.TEXT_TO_TEXT: Count}
'''
MANIFEST = ("id: count\nname: Count\ntype: local\ncapabilities: [text-to-text]\nmain: provider.py\n"
            "exportName: CountProvider\nmodels:\n  - id: count\n    capabilities: [text-to-text]\n")
PRODUCER = """
import json, sys, time
from mediaconduit_worker import transform
from mediaconduit_worker.celery_app import app
url, log, queue, count, tag = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
t = time.perf_counter()
sent, refused = {}, 0
for i in range(count):
    try:
        sent[f"{tag}-{i}"] = transform.apply_async((f"{tag}-{i}", url, "count", {"log": log}), queue=queue).id
    except Exception:
        refused += 1
    print("sent", flush=True, file=sys.stderr)
done = 0
for text, task_id in sent.items():
    try:
        done += app.AsyncResult(task_id).get(timeout=120)["asset"]["content"] == text + "+"
    except Exception:
        pass
print(json.dumps({"seconds": time.perf_counter() - t, "sent": list(sent), "refused": refused, "done": done}))
"""


def burst(group: ReplicationGroup, env: dict[str, str], url: str, log: Path, jobs: int, tag: str,
          kill: bool) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", PRODUCER, url, str(log), "failover-bench", str(jobs), tag],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent: list[str] = []  # a line per publish, read as the producer writes them
    threading.Thread(target=lambda: sent.extend(proc.stderr or []), daemon=True).start()
    promoted = None
    if kill:
        while len(sent) < jobs // 3 and proc.poll() is None:
            time.sleep(0.01)
        old, began = group.master_port(), time.monotonic()
        group.node_on(old).kill()
        group.wait_for_new_master(old)
        promoted = time.monotonic() - began
        time.sleep(3)
        group.node_on(old).start()
    out, _ = proc.communicate(timeout=600)
    report = json.loads(out.strip().splitlines()[-1])
    runs = log.read_text().splitlines() if log.exists() else []
    report["lost"] = sum(1 for t in report["sent"] if t not in runs)
    report["twice"] = sum(1 for t in report["sent"] if runs.count(t) > 1)
    report["promoted"] = promoted
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="count-provider-"))
    (folder / "MediaConduit.provider.yml").write_text(MANIFEST)
    (folder / "provider.py").write_text(PROVIDER)
    print(f"{args.jobs} jobs published at once by one producer, prefork -c 2; a primary, one replica, three Sentinels:")
    for replicas in (0, 1):
        group = ReplicationGroup(Path(tempfile.mkdtemp(prefix="ha-bench-")), replicas=1)
        env = {"MEDIACONDUIT_BROKER_URL": group.url, "MEDIACONDUIT_RESULT_BACKEND": group.url,
               "MEDIACONDUIT_WAIT_REPLICAS": str(replicas), "MEDIACONDUIT_WORKER_LEASE": "5"}
        os.environ.update(env)
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-q", "-A", "mediaconduit_worker.celery_app", "worker",
                                   "-Q", "failover-bench", "-c", "2", "-l", "WARNING", "-n", f"failover-{replicas}@%h"],
                                  env={**os.environ, **env}, start_new_session=True)
        log = folder / f"runs-{replicas}.log"
        try:
            burst(group, env, str(folder), log, 10, f"warm{replicas}", kill=False)  # the worker is up, the provider loaded
            steady = burst(group, env, str(folder), log, args.jobs, f"steady{replicas}", kill=False)
            failed = burst(group, env, str(folder), log, args.jobs, f"failover{replicas}", kill=True)
        finally:
            stop_process(worker)
            group.stop()
        mode = f"WAIT {replicas}" if replicas else "async replication"
        row(f"{mode}: no failover", args.jobs / steady["seconds"], "jobs/s", f"(lost {steady['lost']})")
        row(f"{mode}: primary killed", args.jobs / failed["seconds"], "jobs/s",
            f"(promoted after {failed['promoted']:.1f} s; {failed['refused']} refused at publish, "
            f"{failed['lost']} of {len(failed['sent'])} published never ran, "
            f"{len(failed['sent']) - failed['done']} without a result, {failed['twice']} ran twice)")


if __name__ == "__main__":
    main()
