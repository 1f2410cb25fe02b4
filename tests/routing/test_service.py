"""RoutingService's refresh loop: node changes coalesced into one rebuild per window, promptly;
DirectoryNodes' incremental snapshot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from groundplane.node.client import NodeDirectory
from groundplane.node.v1 import node_pb2
from groundplane.routing.app import DirectoryNodes
from groundplane.routing.policy import PolicyKind, RoutingPolicy, Sighting
from groundplane.routing.service import RoutingService
from groundplane.routing.table import RouteTable, StationInfo

T0 = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)
MODEL = "synthetic"
WAIT_S = 5.0
SATELLITES = ("sat-a", "sat-b", "sat-c")


class GatedClock:
    """A clock whose time stands still and whose ``sleep`` returns only when the test opens
    the gate: the coalescing window ends exactly when the test says so."""

    speed = 1.0

    def __init__(self) -> None:
        self.sleeping = asyncio.Event()
        self.gate = asyncio.Event()
        self.slept_s: list[float] = []

    def now(self) -> datetime:
        return T0

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, simulated_s: float) -> None:
        self.slept_s.append(simulated_s)
        self.sleeping.set()
        await self.gate.wait()
        self.gate.clear()
        self.sleeping.clear()


class Visibility:
    def sightings(self, at: datetime) -> list[Sighting]:
        return [Sighting("london", sat, 45.0, 120.0, 900.0, 600.0) for sat in SATELLITES]


def status(sat: str, state: node_pb2.NodeState.ValueType, epoch: int = 1) -> node_pb2.NodeStatus:
    return node_pb2.NodeStatus(
        satellite_id=sat, epoch=epoch, state=state, served_models=[MODEL], slots=4
    )


def online_in(table: RouteTable) -> set[str]:
    """Satellites with a usable path in the table (a node never heard of or OFFLINE has none)."""
    return {
        path.satellite_id
        for routes in table.stations
        for path in routes.paths
        if path.exclusion is None
    }


async def wait_version(service: RoutingService, above: int) -> RouteTable:
    async with asyncio.timeout(WAIT_S):
        async for table in service.watch():
            if table.version > above:
                return table
    raise AssertionError("the table stream ended")


async def test_a_burst_of_node_changes_is_one_rebuild_after_the_window_and_offline_leaves() -> None:
    """Births of three nodes and one of them going OFFLINE, arriving as separate messages (the
    loop runs between them), build no table until the coalescing window ends (0.1 wall s here)
    and then exactly one, which holds every change: the OFFLINE node is not online in it."""
    clock = GatedClock()
    directory = NodeDirectory()
    service = RoutingService(
        clock=clock,
        stations=[StationInfo("london", 51.5, -0.13)],
        visibility=Visibility(),
        nodes=DirectoryNodes(directory),
        policy=RoutingPolicy(kind=PolicyKind.MAX_ELEVATION, stickiness=None),
        tick_s=3600.0,
        coalesce_wall_s=0.1,
    )
    directory.add_listener(lambda _view: service.invalidate())
    built = await service.refresh()
    loop = asyncio.create_task(service.run(), name="routing-refresh")
    try:
        # The loop's own first refresh: once it is out, every change waits for the loop.
        first = await wait_version(service, built.version)
        assert online_in(first) == set()
        for message in (
            status("sat-a", node_pb2.NODE_STATE_ONLINE),
            status("sat-b", node_pb2.NODE_STATE_ONLINE),
            status("sat-c", node_pb2.NODE_STATE_ONLINE),
            status("sat-b", node_pb2.NODE_STATE_OFFLINE),
        ):
            directory.observe_status(message)
            async with asyncio.timeout(WAIT_S):
                await clock.sleeping.wait()  # the loop woke and waits for the window
            for _ in range(20):
                await asyncio.sleep(0)  # room for a rebuild, were one to start now
            assert service.table is first, "a table was rebuilt inside the coalescing window"
        assert clock.slept_s == [0.1]
        clock.gate.set()
        rebuilt = await wait_version(service, first.version)
        assert rebuilt.version == first.version + 1
        assert online_in(rebuilt) == {"sat-a", "sat-c"}
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


def test_the_directory_snapshot_builds_states_only_for_changed_nodes() -> None:
    """A snapshot after one node's change builds one NodeState and reuses the others' (the
    same objects); the changed node's state is the new one (OFFLINE: not online)."""
    directory = NodeDirectory()
    for sat in SATELLITES:
        directory.observe_status(status(sat, node_pb2.NODE_STATE_ONLINE))
    nodes = DirectoryNodes(directory)
    before = nodes.snapshot()
    assert nodes.states_built_total == len(SATELLITES)
    directory.observe_status(status("sat-b", node_pb2.NODE_STATE_OFFLINE))
    after = nodes.snapshot()
    assert nodes.states_built_total == len(SATELLITES) + 1
    assert after["sat-a"] is before["sat-a"]
    assert after["sat-c"] is before["sat-c"]
    assert not after["sat-b"].online
    assert before["sat-b"].online
