"""Fixtures of the broadcaster's tests (the servers' are in services/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from testing import BroadcasterProcess


@pytest.fixture
def broadcaster(start_broadcaster: Callable[..., BroadcasterProcess]) -> BroadcasterProcess:
    return start_broadcaster()
