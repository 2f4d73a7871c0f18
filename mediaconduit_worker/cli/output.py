"""What every command prints: JSON results and one-line errors."""

from __future__ import annotations

import json
from typing import Any


def print_json(data: Any) -> None:
    from rich.console import Console

    Console().print_json(json.dumps(data, default=str))
