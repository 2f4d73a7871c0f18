"""The Lua scripts of the shared state in Redis, read from the ``.lua`` files in ``lua/`` beside this module.

Each file starts with a table of its KEYS and of its one argument, ``ARGV[1]``: a JSON object of named
values the script decodes with ``cjson``, so a call reads as names, not as positions. Every script gets
the Redis server's clock as ``now`` (``now.lua``); scripts that settle spend also get ``spend.lua``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import redis
from redis.commands.core import Script

LUA_DIR = Path(__file__).with_name("lua")


@functools.cache
def source(name: str, *preludes: str) -> str:
    """The text of ``name.lua`` after its preludes (``now`` always first), read once per process."""
    parts = ("now", *preludes, name)
    return "\n".join((LUA_DIR / f"{part}.lua").read_text(encoding="utf-8") for part in parts)


def register(client: redis.Redis, name: str, *preludes: str) -> Script:
    """``name.lua`` bound to ``client`` (sent by its sha, loaded once on first use)."""
    return client.register_script(source(name, *preludes))


def named(**values: Any) -> str:
    """The ``ARGV[1]`` of a script: its named arguments as compact JSON."""
    return json.dumps(values, separators=(",", ":"))
