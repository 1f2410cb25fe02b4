"""The gateway app's readiness follows what it last published, whatever the task timing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from groundplane.gateway.app import GatewayApp, GatewaySettings
from groundplane.gateway.auth import TenantRegistry
from groundplane.gateway.service import GatewayConfig
from groundplane.gateway.sources import LocalTableSource
from groundplane.kernel.clock import SimulatedClock
from groundplane.mqtt.broker import PrivateBroker
from groundplane.routing.client import RouteTable

from .conftest import EPOCH, FAST_BACKOFF, route_table


class TableAfterFirstLook(LocalTableSource):
    """No table at the gateway's first look (its first readiness publish), the table at every
    later one, and no update ever signalled: the table "arrived" between the first publish and
    the readiness task's start."""

    def __init__(self, table: RouteTable) -> None:
        super().__init__()
        self._table = table
        self.looks = 0

    def current(self) -> RouteTable | None:
        self.looks += 1
        return None if self.looks == 1 else self._table

    async def wait_for_update(self, timeout_s: float) -> bool:
        await asyncio.sleep(timeout_s)
        return False


async def test_a_table_arriving_before_the_readiness_task_starts_still_makes_it_ready(
    tmp_path: Path,
) -> None:
    """The first readiness publish says "no route table yet"; the table is there when the
    readiness task first looks. The gateway must turn SERVING (before the fix the task compared
    with its own first look, saw no change and left readiness NOT_SERVING for good)."""
    clock = SimulatedClock(EPOCH, speed=1.0)
    tables = TableAfterFirstLook(route_table(1))
    async with PrivateBroker(nodes=(), workdir=tmp_path / "broker") as broker:
        settings = GatewaySettings(
            broker=broker.address,
            tenants=TenantRegistry.from_mapping({}),
            instance_id="gw-readiness",
            config=GatewayConfig(default_deadline_s=5.0),
            backoff=FAST_BACKOFF,
            drain_grace_s=0.1,
            unready_delay_s=0.0,
        )
        async with GatewayApp(settings, clock, tables=tables) as app:
            await app.wait_ready(10.0)
            assert app.inputs_live()
            assert tables.looks >= 2
