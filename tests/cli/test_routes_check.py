"""``mediaconduit routes check [FILE]`` as docs/routes.md describes it (a real ``mediaconduit`` process): a file
is checked as producers and workers will read it, a candidate whose model its provider lacks is refused
naming the route, the candidate and the field, and a file without its ``routes:`` top level says so. A
route job's error from a worker whose routes file differs says it was the worker's."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")


def mediaconduit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MEDIACONDUIT), *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_good_file_is_checked_and_its_queues_printed(echo_url, tmp_path):
    routes = write(tmp_path / "routes.yml", {"routes": {"chat": {"candidates": [{"provider": echo_url, "model": "upper"}]}}})
    proc = mediaconduit("routes", "check", str(routes))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "chat: fallback over 1 candidate -> queue text-to-text\n"


def test_a_model_the_provider_lacks_is_refused(echo_url, tmp_path):
    routes = write(tmp_path / "routes.yml", {"routes": {"chat": {"candidates": [
        {"provider": echo_url, "model": "upper"}, {"provider": echo_url, "model": "uppr"}]}}})
    line = one_error_line(mediaconduit("routes", "check", str(routes)))
    assert line == (f"error: routes file {routes}: route 'chat', candidate 2 ({echo_url} uppr), field 'model': provider "
                    "'echo-provider' has no model 'uppr' (models: echo, upper, reverse)")


def test_a_file_without_its_routes_key_says_so(echo_url, tmp_path):
    routes = write(tmp_path / "routes.yml", {"shout": {"candidates": [{"provider": echo_url, "model": "upper"}]}})
    line = one_error_line(mediaconduit("routes", "check", str(routes)))
    assert line == (f"error: routes file {routes}: no 'routes' key at the top level (found 'shout'); each route goes "
                    "under it: 'routes: {NAME: {candidates: [...]}}'")


def test_the_default_file_is_MEDIACONDUIT_ROUTES(echo_url, tmp_path):
    missing = tmp_path / "none.yml"
    line = one_error_line(mediaconduit("routes", "check", env={"MEDIACONDUIT_ROUTES": str(missing)}))
    assert line.startswith(f"error: no routes file at {missing} (set MEDIACONDUIT_ROUTES")


def test_a_route_the_worker_does_not_know_is_the_workers_error(text_worker, echo_url, tmp_path):
    """The routes file is set for the command only: the producer's check passes, and the worker, reading its
    own, fails the job; the line says it happened there."""
    name = f"only-here-{uuid.uuid4().hex[:6]}"
    routes = write(tmp_path / "routes.yml", {"routes": {name: {"candidates": [{"provider": echo_url, "model": "upper"}]}}})
    line = one_error_line(mediaconduit("submit", "hi", "--provider", f"route:{name}",
                                       env={"MEDIACONDUIT_ROUTES": str(routes)}))
    assert line.startswith("error: job ") and f" failed on worker {text_worker.hostname}: " in line, line
    assert "no routes file at" in line or f"no route {name!r}" in line, line
