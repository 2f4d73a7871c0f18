"""The installation secret and what it signs (``worker/signing.py``): one secret per home, created once
by whichever of many racing processes gets there first, private, never shown."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mediaconduit_worker.errors import InvalidInputError, MediaConduitError

READ_SECRET = ("from mediaconduit_worker.worker.signing import installation_secret\n"
               "print(installation_secret().decode())\n")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDIACONDUIT_INSTALLATION_SECRET"}
    return {**env, "MEDIACONDUIT_HOME": str(home), **extra}


def test_processes_racing_to_create_the_secret_file_all_read_the_one_that_won(tmp_path):
    home = tmp_path / "home"
    racers = [subprocess.Popen([sys.executable, "-c", READ_SECRET], env=_env(home), stdout=subprocess.PIPE, text=True)
              for _ in range(8)]
    seen = {p.communicate(timeout=120)[0].strip() for p in racers}
    assert all(p.returncode == 0 for p in racers)
    (secret,) = seen
    path = home / "installation-secret"
    assert len(secret) == 64 and path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in home.iterdir()) == ["installation-secret"]  # no temporary file left behind
    again = subprocess.run([sys.executable, "-c", READ_SECRET], env=_env(home), capture_output=True, text=True)
    assert again.stdout.strip() == secret  # created once, read ever after


def test_the_setting_wins_and_a_short_one_is_refused_without_being_quoted(tmp_path, monkeypatch):
    from mediaconduit_worker.settings import get_settings
    from mediaconduit_worker.worker.signing import installation_secret, keyed_digest

    monkeypatch.setenv("MEDIACONDUIT_HOME", str(tmp_path))
    monkeypatch.setenv("MEDIACONDUIT_INSTALLATION_SECRET", "a shared secret of this deployment")
    get_settings.cache_clear()
    try:
        assert installation_secret() == b"a shared secret of this deployment"
        assert "a shared secret" not in repr(get_settings())
        assert keyed_digest("cache-key", "x") != keyed_digest("batch-id", "x")  # one digest per purpose
        assert not (tmp_path / "installation-secret").exists()
        monkeypatch.setenv("MEDIACONDUIT_INSTALLATION_SECRET", "short")
        get_settings.cache_clear()
        with pytest.raises(MediaConduitError, match="must be at least 16 characters") as err:
            installation_secret()
        assert "short" not in str(err.value)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_batch_header_is_good_only_for_the_job_it_was_signed_for():
    from mediaconduit_worker.worker.signing import sign_batch_header, verified_batch

    header = sign_batch_header("batch-1", 3.0, "job-a")
    assert verified_batch(header, "job-a") == header
    with pytest.raises(InvalidInputError, match="'mediaconduit_batch' has a signature this installation did not make"):
        verified_batch(header, "job-b")
    with pytest.raises(InvalidInputError, match="'mediaconduit_batch' has a signature"):
        verified_batch({**header, "budget_usd": 1000.0}, "job-a")
    with pytest.raises(InvalidInputError, match="'mediaconduit_batch' is not signed"):
        verified_batch({"id": "batch-1", "budget_usd": 3.0}, "job-a")
    with pytest.raises(InvalidInputError, match="'mediaconduit_batch' is not signed"):
        verified_batch("batch-1", "job-a")
