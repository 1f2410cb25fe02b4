"""`groundplane up`'s system serves the gateway's and the handoff manager's Prometheus metrics
when asked (`--gateway-metrics-port`, `--handoff-metrics-port`), parsed with prometheus_client's
own parser."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.orbit.constellations import generate
from groundplane.scenario import default_stations, default_users
from groundplane.system.system import GroundplaneSystem, SystemConfig

from ..scrape import samples

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
#: Wall seconds the system may take to answer its first requests on a busy machine.
FIRST_ANSWERS_S = 60.0


def _requests_ok(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    return sum(
        value
        for (name, labels), value in scraped.items()
        if name == "groundplane_gateway_requests_total" and ("outcome", "OK") in labels
    )


async def test_up_serves_gateway_and_handoff_metrics_that_count_its_requests(
    tmp_path: Path,
) -> None:
    """With both metrics ports set to 0, the system reports two /metrics URLs; once the load
    has been answered, the gateway's OK counter covers at least the requests the run counted
    as served, and the handoff endpoint exposes its session gauge (one session open)."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    config = SystemConfig(
        elements=generate("walker:24/6/1@550km:53", EPOCH),
        stations=default_stations(),
        users=default_users(),
        rate_rps=5.0,
        sessions=1,
        workdir=tmp_path / "broker",
        gateway_metrics_port=0,
        handoff_metrics_port=0,
    )
    system = GroundplaneSystem(config, SimulatedClock(EPOCH, speed=10.0))
    async with asyncio.timeout(120), asyncio.TaskGroup() as group:
        running = group.create_task(system.run(), name="system-under-test")
        await system.wait_ready()
        gateway_url, handoff_url = system.gateway_metrics_url, system.handoff_metrics_url
        assert gateway_url is not None
        assert handoff_url is not None
        async with asyncio.timeout(FIRST_ANSWERS_S):
            while system.stats.succeeded < 3:  # noqa: ASYNC110 (a counter, no event to wait on)
                await asyncio.sleep(0.1)
        served = system.stats.succeeded
        assert _requests_ok(await samples(gateway_url)) >= served
        handoff = await samples(handoff_url)
        assert handoff[("groundplane_handoff_sessions", frozenset({("state", "active")}))] >= 1
        system.stop()
        await running
