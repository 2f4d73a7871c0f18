"""Running git on behalf of a source: no prompts, no command-running transports, one clear error line."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ..errors import ProviderSourceError
from ..redaction import redact_url

_GIT_TIMEOUT = 300
#: Transports git may use (``ext::`` and ``fd::`` run commands); overrides ``protocol.*.allow``.
GIT_PROTOCOLS = "file:git:http:https:ssh"


def git(*args: str, cwd: Path | None = None, url: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_ALLOW_PROTOCOL": GIT_PROTOCOLS}
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=_GIT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise ProviderSourceError(f"cannot fetch {redact_url(url)!r}: git {args[0]} timed out after {_GIT_TIMEOUT}s") from None
    if proc.returncode != 0:
        detail = git_error_detail(proc.stderr, proc.returncode)
        raise ProviderSourceError(f"cannot fetch {redact_url(url)!r}: git {args[0]}: {detail}")
    return proc.stdout.strip()


#: What git says went wrong, as opposed to the advice it ends with ("... and the repository exists.").
_GIT_CAUSES = re.compile(
    r"repository not found|could not resolve host|not a git repository|does not appear to be a git repository"
    r"|authentication failed|permission denied|connection refused|couldn't find remote ref",
    re.IGNORECASE,
)
_GIT_PREFIX = re.compile(r"^(fatal|error|remote):\s*", re.IGNORECASE)


def git_error_detail(stderr: str, returncode: int) -> str:
    """The line of git's error output that names the cause: a known cause, else the first ``fatal:`` line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    chosen = (next((line for line in lines if _GIT_CAUSES.search(line)), None)
              or next((line for line in lines if _GIT_PREFIX.match(line)), None)
              or (lines[-1] if lines else f"exit code {returncode}"))
    return _GIT_PREFIX.sub("", chosen)
