"""A whole gateway system per test: private Mosquitto, link emulator, node agents that a test can
kill one by one, a route table the test controls, and the gateway serving gRPC on loopback."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from groundplane.gateway.app import GatewayApp, GatewaySettings
from groundplane.gateway.auth import Tenant, TenantConfig, TenantRegistry
from groundplane.gateway.service import GatewayConfig
from groundplane.gateway.sources import LocalTableSource
from groundplane.gateway.v1 import gateway_pb2_grpc as pb_grpc
from groundplane.kernel.clock import SimulatedClock
from groundplane.links.emulator import LinkEmulator
from groundplane.links.model import LinkConfig, LinkGeometry
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import Backoff, MqttClient
from groundplane.node.agent import AgentConfig, EpochSource, NodeAgent
from groundplane.node.backends import SyntheticBackend, SyntheticModelSpec
from groundplane.node.directory import NodeView
from groundplane.node.engine import Engine, EngineConfig
from groundplane.routing.policy import NodeState, PolicyKind, RoutingPolicy, Sighting
from groundplane.routing.table import RouteTable, StationInfo, UpcomingPass, build_table

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
STATION = StationInfo("svalbard", 78.2297, 15.4077)
USER = (78.22, 15.65)
"""A user in Longyearbyen, a few km from the station."""
FIRST, SECOND = "25544", "48274"
ELEVATION_DEG = {FIRST: 70.0, SECOND: 50.0}
"""Under the max-elevation policy FIRST ranks first and SECOND is its fallback."""
RANGE_KM = 1_200.0
FAST_BACKOFF = Backoff(base_s=0.05, factor=1.6, cap_s=0.5, jitter=0.2)
FAST = SyntheticModelSpec("synth-fast", decode_s_per_token=0.002)
SLOW = SyntheticModelSpec(
    "synth-slow", decode_s_per_token=0.05, min_answer_tokens=16, max_answer_tokens=16
)
"""16 tokens, 0.8 s per answer: long enough to kill a node or drop a link mid-answer."""
TOKENS = {"alpha": "alpha-token-0123456789", "beta": "beta-token-0123456789"}
FLOOD_LIMITS = {"max_concurrent": 1, "max_queued": 1}


def route_table(version: int, *, visible: bool = True, aos_in_s: float = 600.0) -> RouteTable:
    """Both satellites visible from the station (or none, with a pass of FIRST upcoming)."""
    nodes = {
        sat: NodeState(sat, online=True, models=frozenset({FAST.name, SLOW.name}))
        for sat in (FIRST, SECOND)
    }
    sightings = [
        Sighting(STATION.station_id, sat, ELEVATION_DEG[sat], 180.0, RANGE_KM, 600.0)
        for sat in (FIRST, SECOND)
    ]
    upcoming = [
        UpcomingPass(
            STATION.station_id,
            FIRST,
            EPOCH + timedelta(seconds=aos_in_s),
            EPOCH + timedelta(seconds=aos_in_s + 600.0),
        )
    ]
    return build_table(
        version=version,
        computed_at=EPOCH,
        stations=[STATION],
        sightings=sightings if visible else [],
        links={},
        nodes=nodes,
        policy=RoutingPolicy(kind=PolicyKind.MAX_ELEVATION, stickiness=None),
        upcoming=upcoming,
    )


def has_epoch(epoch: int) -> Callable[[NodeView], bool]:
    return lambda view: view.epoch == epoch


@dataclass
class GatewaySystem:
    clock: SimulatedClock
    app: GatewayApp
    tables: LocalTableSource
    stub: pb_grpc.InferenceServiceAsyncStub
    engines: dict[str, Engine]
    node_tasks: dict[str, asyncio.Task[None]]
    geometry: dict[tuple[str, str], LinkGeometry]
    killed: set[str] = field(default_factory=set)
    emulator: LinkEmulator | None = None

    def auth(self, tenant: str = "alpha") -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {TOKENS[tenant]}"),)

    def executions(self) -> int:
        """Answers completed by every node engine."""
        return sum(engine.load().executed_total for engine in self.engines.values())

    def kill(self, satellite_id: str) -> None:
        """Stop the node abruptly: its agent and its engine (running work is lost)."""
        self.killed.add(satellite_id)
        self.node_tasks[satellite_id].cancel()

    def drop_link(self, satellite_id: str) -> None:
        """The satellite leaves the station's sky: the emulator takes the link down."""
        self.geometry.pop((STATION.station_id, satellite_id), None)


@pytest.fixture
async def gateway_system(tmp_path: Path) -> AsyncIterator[GatewaySystem]:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    clock = SimulatedClock(EPOCH)
    geometry = {
        (STATION.station_id, sat): LinkGeometry(True, RANGE_KM, 60.0) for sat in (FIRST, SECOND)
    }
    registry = TenantRegistry(
        [
            TenantConfig(Tenant("alpha"), (TOKENS["alpha"],)),
            TenantConfig(Tenant("beta", **FLOOD_LIMITS), (TOKENS["beta"],)),
        ]
    )
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(
            PrivateBroker(nodes=(FIRST, SECOND), workdir=tmp_path / "broker")
        )
        links_client = await stack.enter_async_context(
            MqttClient(broker.address, client_id="links", clock=clock, backoff=FAST_BACKOFF)
        )
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        emulator = LinkEmulator(
            links_client, clock, lambda _at: dict(geometry), config=LinkConfig(), tick_s=0.05
        )
        emulator_task = tasks.create_task(emulator.run(), name="test-link-emulator")
        stack.callback(emulator_task.cancel)
        await emulator.wait_ready()
        engines: dict[str, Engine] = {}
        agents: dict[str, NodeAgent] = {}
        node_tasks: dict[str, asyncio.Task[None]] = {}

        async def run_node(sat: str, ready: asyncio.Event) -> None:
            async with Engine(
                SyntheticBackend([FAST, SLOW], clock), clock, EngineConfig()
            ) as engine:
                engines[sat] = engine
                agents[sat] = NodeAgent(
                    sat,
                    broker.node_address(sat),
                    engine,
                    clock,
                    epochs=EpochSource(time.time_ns),
                    config=AgentConfig(
                        keepalive_s=5, load_interval_s=0.2, io_timeout_s=3.0, backoff=FAST_BACKOFF
                    ),
                )
                ready.set()
                await agents[sat].run()

        for sat in (FIRST, SECOND):
            ready = asyncio.Event()
            node_tasks[sat] = tasks.create_task(run_node(sat, ready), name=f"test-node:{sat}")
            stack.callback(node_tasks[sat].cancel)
            await asyncio.wait_for(ready.wait(), 5.0)
        tables = LocalTableSource(route_table(1))
        settings = GatewaySettings(
            broker=broker.address,
            tenants=registry,
            instance_id="gw-test",
            config=GatewayConfig(default_deadline_s=10.0),
            backoff=FAST_BACKOFF,
            drain_grace_s=0.5,
            unready_delay_s=0.0,
            metrics_port=0,
        )
        app = await stack.enter_async_context(GatewayApp(settings, clock, tables=tables))
        for sat in (FIRST, SECOND):
            epoch = await agents[sat].wait_ready(5.0)
            await app.directory.wait_for(sat, has_epoch(epoch), 5.0)
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(app.target))
        yield GatewaySystem(
            clock,
            app,
            tables,
            pb_grpc.InferenceServiceStub(channel),
            engines,
            node_tasks,
            geometry,
            emulator=emulator,
        )
