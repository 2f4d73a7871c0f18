"""``providers validate`` wall time on the local reference providers, as a user runs it (a fresh process
and a fresh cache each time, dependencies installed again).

    python bench/bench_validate.py [--runs 3] [--provider echo ...]

Target: under 60 s per local provider.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, row

LOCAL = ["echo", "textops", "cowsay-local", "textrender"]
TARGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--provider", action="append", choices=LOCAL, help="default: every local reference provider")
    args = parser.parse_args()
    env = {**os.environ, "MEDIACONDUIT_HOME": tempfile.mkdtemp(prefix="mediaconduit-bench-validate-")}
    print(f"providers validate, {args.runs} runs each (fresh process and cache; target < {TARGET_S:.0f} s)")
    worst = 0.0
    for name in args.provider or LOCAL:
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "mediaconduit_worker.cli", "providers", "validate",
                                   str(REPO / "providers" / f"{name}-provider"), "--json"],
                                  env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if proc.returncode != 0:
                sys.exit(f"validate {name} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        worst = max(worst, max(times))
        row(f"{name}-provider median (max {max(times):.1f} s)", statistics.median(times), "s",
            "ok" if max(times) < TARGET_S else f"OVER {TARGET_S:.0f} s")
    if worst >= TARGET_S:
        sys.exit(f"slowest run {worst:.1f} s is over the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
