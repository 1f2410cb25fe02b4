"""routing.client.WatchedTableSource against a real routing gRPC server that goes away and back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.serving import GrpcServer
from groundplane.mqtt.client import Backoff
from groundplane.routing.client import RouteRequest, WatchedTableSource
from groundplane.routing.policy import NodeState, PolicyKind, RoutingPolicy, Sighting
from groundplane.routing.service import RoutingService
from groundplane.routing.servicer import RoutingServicer
from groundplane.routing.table import StationInfo

T0 = datetime(2026, 8, 15, 12, tzinfo=UTC)
MODEL = "synthetic"
LONDON = (51.5074, -0.1278)
TIMEOUT_S = 10.0
FAST = Backoff(base_s=0.05, factor=1.6, cap_s=0.2, jitter=0.2)


class Fixed:
    def __init__(self, sightings: list[Sighting]) -> None:
        self.items = sightings

    def sightings(self, at: datetime) -> list[Sighting]:
        return list(self.items)


class Nodes:
    def snapshot(self) -> Mapping[str, NodeState]:
        return {s: NodeState(s, True, frozenset({MODEL})) for s in ("S-1", "S-2")}


def service(sat: str) -> RoutingService:
    return RoutingService(
        clock=SimulatedClock(T0),
        stations=[StationInfo("london", *LONDON)],
        visibility=Fixed([Sighting("london", sat, 50.0, 120.0, 900.0, 600.0)]),
        nodes=Nodes(),
        policy=RoutingPolicy(kind=PolicyKind.MAX_ELEVATION, stickiness=None),
        tick_s=3600.0,
    )


async def wait_until(source: WatchedTableSource, sat: str, connected: bool) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            table = source.current()
            on_table = table is not None and any(
                p.satellite_id == sat for s in table.stations for p in s.paths
            )
            if on_table and source.connected is connected:
                return
            await source.wait_for_update(0.05)


async def test_the_table_source_follows_routing_across_a_restart_and_decides_locally() -> None:
    """The source receives routing's table (decidable locally: S-1 chosen), reports the stream
    down while the server is gone but keeps the last table, and follows the restarted server on
    the same port (its new table names S-2) without being restarted itself."""
    first = GrpcServer([RoutingServicer(service("S-1")).binding()], unready_delay_s=0.0)
    port = await first.start()
    source = WatchedTableSource(first.target, backoff=FAST)
    async with asyncio.TaskGroup() as group:
        watching = group.create_task(source.run(), name="test-table-watch")
        await wait_until(source, "S-1", connected=True)
        table = source.current()
        assert table is not None
        request = RouteRequest(model=MODEL, lat_deg=LONDON[0], lon_deg=LONDON[1])
        assert table.decide(request, T0).require().candidate.satellite_id == "S-1"

        await first.stop(grace_s=0.0)
        await wait_until(source, "S-1", connected=False)

        second = GrpcServer(
            [RoutingServicer(service("S-2")).binding()],
            address=f"127.0.0.1:{port}",
            unready_delay_s=0.0,
        )
        await second.start()
        try:
            await wait_until(source, "S-2", connected=True)
        finally:
            watching.cancel()
            await second.stop(grace_s=0.0)
