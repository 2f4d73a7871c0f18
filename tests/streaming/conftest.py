"""What every streaming test shares: the stand-in APIs reset before each test, and the reference remote
providers published once per module."""

from __future__ import annotations

import pytest
from support.remote import publish_remote_providers
from support.standin_apis import StandInAPIs


@pytest.fixture(autouse=True)
def _fresh_apis(apis: StandInAPIs) -> None:
    apis.reset()


@pytest.fixture(scope="module")
def urls() -> dict[str, str]:
    return publish_remote_providers()
