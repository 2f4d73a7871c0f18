"""Small things a newcomer reads in the first hour (a real ``mediaconduit`` process): an unpriced batch's
spend is unknown, not $0; a bad JSONL line has one line number; counts agree with their nouns; the batch
summary is text beside the rest; the scaffold's README names a model it has."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MEDIACONDUIT = Path(sys.executable).with_name("mediaconduit")


def mediaconduit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MEDIACONDUIT), *args], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_an_unpriced_batch_with_a_bad_line_and_its_summary(text_worker, echo_url, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('"a"\n{not json\n')
    out = tmp_path / "out.jsonl"
    proc = mediaconduit("batch", str(src), "--provider", echo_url, "--model", "upper", "--out", str(out), "--summary")
    assert proc.returncode == 1  # the skipped line
    assert proc.stdout == ""  # everything for people goes to stderr
    lines = proc.stderr.splitlines()
    assert f"{src} line 2: not JSON (Expecting property name enclosed in double quotes at column 2) (skipped)" in lines
    assert any(line.startswith("sent 1, succeeded 1, failed 0,") and "spent unknown (no call was priced)" in line
               for line in lines), proc.stderr
    assert "summary (the batch's callback): 1 job, 1 succeeded, 0 failed; spent $0.000000" in lines, proc.stderr


def test_cache_stats_count_one_entry_as_one(text_worker, echo_url):
    assert mediaconduit("cache", "clear").returncode == 0  # the tests run one at a time: no other job caches now
    assert mediaconduit("submit", "hi", "--provider", echo_url, "--model", "upper", "-o", "cache=true").returncode == 0
    proc = mediaconduit("cache", "stats")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1 entry, "), proc.stdout


def test_the_scaffold_readme_names_its_own_model(tmp_path):
    proc = mediaconduit("providers", "new", "greet", "--dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    readme = (tmp_path / "greet-provider" / "README.md").read_text()
    assert "MODEL-ID" not in readme
    model = readme.split("| `", 1)[1].split("`", 1)[0]  # the first row of its model table
    assert f'"https://github.com/YOUR-ORG/greet-provider", "{model}", {{}}' in readme
