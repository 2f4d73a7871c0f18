"""``make run`` (``mediaconduit demo``) on a fresh home, as a newcomer runs it first: it prints the transform,
its record and the chain, says what its two times are, leaves nothing running, and ends naming the commands
that keep a broker and a worker up for the README's next step."""

from __future__ import annotations

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
    out = " ".join(proc.stdout.split())
    assert "(embedded)" in out and '"generation_prompt"' in out and "chain echo/upper | cowsay-default" in out
    assert "both times are milliseconds" in out
    assert out.endswith("For jobs of your own (the README's first steps): `mediaconduit broker start`, then "
                        "`mediaconduit worker --capability text-to-text &`")
    stopped = subprocess.run([str(MEDIACONDUIT), "broker", "stop"], capture_output=True, text=True, env=env, timeout=60)
    assert stopped.stdout.strip() == "not running"  # the demo stopped the broker it started
