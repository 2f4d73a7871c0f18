"""``make run`` (``mediaconduit demo``) on a fresh home, as a newcomer runs it first: it prints the transform,
its record and the chain, says what its two times are, leaves nothing running, and ends naming the commands
that keep a broker and a worker up for the README's next step, and the gateway and curl lines that send a job
over HTTP, which are run as printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import free_port

MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")


def test_the_demo_explains_itself_and_the_next_step(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MEDIACONDUIT_BROKER_URL", "MEDIACONDUIT_RESULT_BACKEND")}
    env.update(MEDIACONDUIT_HOME=str(tmp_path / "home"), MEDIACONDUIT_EMBEDDED_PORT=str(free_port()), COLUMNS="200")
    proc = subprocess.run([str(MEDIACONDUIT), "demo"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    told, _, http = proc.stdout.partition("through the HTTP API:\n")
    out = " ".join(told.split())
    assert "(embedded)" in out and '"generation_prompt"' in out and "chain echo/upper | cowsay-default" in out
    assert "both times are milliseconds" in out
    assert out.endswith("For jobs of your own (the README's first steps): `mediaconduit broker start`, then "
                        "`mediaconduit worker --capability text-to-text &`; from any language,")
    stopped = subprocess.run([str(MEDIACONDUIT), "broker", "stop"], capture_output=True, text=True, env=env, timeout=60)
    assert stopped.stdout.strip() == "not running"  # the demo stopped the broker it started

    # The HTTP lines it printed work, once a broker and a worker run as it says (the gateway given a moment).
    lines = [line.strip() for line in http.splitlines() if line.strip()]
    assert lines[0].endswith("mediaconduit gateway &") and lines[-1].startswith("curl "), lines
    env["PATH"] = f"{MEDIACONDUIT.parent}{os.pathsep}{env['PATH']}"
    script = "\n".join(["mediaconduit broker start", "mediaconduit worker --capability text-to-text &", lines[0],
                         *lines[1:-1], "until curl -sf -o /dev/null http://127.0.0.1:8700/openapi.json; do sleep 1; done",
                         "until mediaconduit status --json | grep -q text-to-text; do sleep 1; done", lines[-1],
                         "kill %1 %2", "mediaconduit broker stop >&2"])
    ran = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=180, env=env,
                         start_new_session=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    replies = [line for line in ran.stdout.splitlines() if line.startswith('{"id"')]  # beside uvicorn's access log
    assert len(replies) == 1, ran.stdout
    job = json.loads(replies[0])
    assert job["status"] == "succeeded" and job["result"]["asset"]["content"] == "HELLO", job
