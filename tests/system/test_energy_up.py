"""`up --energy` in-process: the nodes model their energy and the summary reports it."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from groundplane.cli.serve_routing import routing_policy
from groundplane.kernel.clock import SimulatedClock
from groundplane.orbit.constellations import generate
from groundplane.scenario import DEFAULT_CONSTELLATION, default_stations, default_users
from groundplane.system.report import write_summary
from groundplane.system.system import GroundplaneSystem, SystemConfig

pytestmark = pytest.mark.slow

EPOCH = datetime(2026, 3, 1, tzinfo=UTC)


async def test_up_with_energy_reports_every_node_in_the_summary(tmp_path: Path) -> None:
    """With energy on and the energy-aware policy, requests are served and the summary's energy
    section totals every node's reports: all 96 nodes report, batteries were drawn (some nodes
    are in eclipse over 10 simulated minutes), the lowest charge is within [0, 1] and no node
    went below its reserve."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    config = SystemConfig(
        elements=generate(DEFAULT_CONSTELLATION, EPOCH),
        stations=default_stations(),
        users=default_users(),
        rate_rps=5.0,
        policy=routing_policy("energy-aware"),
        energy=True,
        workdir=tmp_path / "broker",
    )
    system = GroundplaneSystem(config, SimulatedClock(EPOCH, speed=120.0))

    async def stop_later(running: GroundplaneSystem) -> None:
        await asyncio.sleep(5.0)
        running.stop()

    async with asyncio.timeout(60):
        await system.run(stop_later)
    write_summary(tmp_path / "summary.json", system.stats)
    summary = json.loads((tmp_path / "summary.json").read_text())
    energy = summary["energy"]
    assert energy["nodes_reporting"] == 96
    assert energy["battery_wh_drawn"] > 0.0
    assert 0.0 <= energy["min_soc"] <= 1.0
    assert energy["nodes_below_reserve"] == 0
    assert summary["requests"]["succeeded"] > 0
