"""A private Mosquitto per test, started by groundplane's own launcher on a free loopback port."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import Backoff

NODES = ("25544", "48274")
FAST_BACKOFF = Backoff(base_s=0.05, factor=1.6, cap_s=0.5, jitter=0.2)
"""Same shape as the default (×1.6, ±20 %), scaled down so reconnect tests take milliseconds."""


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    """A running broker with accounts for NODES; tests may kill() and start() it again."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    async with PrivateBroker(nodes=NODES, workdir=tmp_path / "broker") as running:
        yield running


@pytest.fixture
def clock() -> SimulatedClock:
    """Simulated time at real speed, starting at a fixed epoch."""
    return SimulatedClock(datetime(2026, 8, 15, tzinfo=UTC))
