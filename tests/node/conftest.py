"""A whole node system per test: private Mosquitto, link emulator, node agents and a requester."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.links.emulator import LinkEmulator
from groundplane.links.model import LinkConfig, LinkGeometry
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import Backoff, MqttClient
from groundplane.node.agent import AgentConfig
from groundplane.node.backends import SyntheticBackend, SyntheticModelSpec
from groundplane.node.directory import NodeDirectory, NodeView
from groundplane.node.engine import EngineConfig
from groundplane.node.host import HostedNode, NodeHost
from groundplane.node.requester import Requester

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
STATION = "svalbard"
SATELLITES = ("25544", "48274")
RANGE_KM = 1_200.0
"""Fixed slant range of every emulated link (always up)."""
FAST_BACKOFF = Backoff(base_s=0.05, factor=1.6, cap_s=0.5, jitter=0.2)
"""Same shape as the default backoff, scaled down so reconnects take well under a second."""
FAST_MODEL = SyntheticModelSpec("synth-7b", decode_s_per_token=0.002)


@dataclass
class System:
    """Everything a node test talks to."""

    broker: PrivateBroker
    clock: SimulatedClock
    emulator: LinkEmulator
    links: MqttClient
    ground: MqttClient
    directory: NodeDirectory
    requester: Requester
    host: NodeHost | None
    epochs: dict[str, int] = field(default_factory=dict)

    def deadline(self, seconds: float = 5.0) -> datetime:
        return self.clock.now() + timedelta(seconds=seconds)


SystemFactory = Callable[..., AbstractAsyncContextManager[System]]


def geometry(
    satellites: Sequence[str],
) -> Callable[[datetime], dict[tuple[str, str], LinkGeometry]]:
    """Every satellite always in view of STATION at RANGE_KM."""
    links = {(STATION, sat): LinkGeometry(True, RANGE_KM, 60.0) for sat in satellites}

    def provide(_at: datetime) -> dict[tuple[str, str], LinkGeometry]:
        return dict(links)

    return provide


def has_epoch(epoch: int) -> Callable[[NodeView], bool]:
    return lambda view: view.epoch == epoch


@pytest.fixture
async def node_broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    """A running private broker with node accounts for SATELLITES."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    async with PrivateBroker(nodes=SATELLITES, workdir=tmp_path / "broker") as running:
        yield running


@pytest.fixture
def make_system(node_broker: PrivateBroker) -> SystemFactory:
    """Start emulator + ground side (+ an in-process NodeHost unless ``hosted=False``)."""

    @asynccontextmanager
    async def start(
        *,
        hosted: bool = True,
        models: Sequence[SyntheticModelSpec] = (FAST_MODEL,),
        engine_config: EngineConfig | None = None,
        keepalive_s: int = 30,
        backoff: Backoff = FAST_BACKOFF,
        load_interval_s: float = 0.2,
        io_timeout_s: float = 3.0,
    ) -> AsyncIterator[System]:
        clock = SimulatedClock(EPOCH)
        directory = NodeDirectory()
        async with AsyncExitStack() as stack:
            emulator_client = await stack.enter_async_context(
                MqttClient(
                    node_broker.address,
                    client_id="links",
                    clock=clock,
                    backoff=backoff,
                    io_timeout_s=io_timeout_s,
                )
            )
            ground = await stack.enter_async_context(
                MqttClient(
                    node_broker.address,
                    client_id="ground",
                    clock=clock,
                    backoff=backoff,
                    io_timeout_s=io_timeout_s,
                )
            )
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            emulator = LinkEmulator(
                emulator_client, clock, geometry(SATELLITES), config=LinkConfig(), tick_s=0.05
            )
            emulator_task = tasks.create_task(emulator.run(), name="test-link-emulator")
            stack.callback(emulator_task.cancel)
            await directory.attach(ground)
            requester = await stack.enter_async_context(
                Requester(ground, clock, instance_id="gw-test", directory=directory)
            )
            await ground.wait_connected()
            await emulator.wait_ready()
            host = None
            system = System(
                node_broker, clock, emulator, emulator_client, ground, directory, requester, None
            )
            if hosted:
                host = NodeHost(
                    [
                        HostedNode(
                            sat,
                            node_broker.node_address(sat),
                            SyntheticBackend(list(models), clock),
                            engine_config or EngineConfig(),
                        )
                        for sat in SATELLITES
                    ],
                    clock,
                    agent_config=AgentConfig(
                        keepalive_s=keepalive_s,
                        load_interval_s=load_interval_s,
                        io_timeout_s=io_timeout_s,
                        backoff=backoff,
                    ),
                )
                host_task = tasks.create_task(host.run(), name="test-node-host")
                stack.callback(host_task.cancel)
                system.host = host
                system.epochs = await host.wait_ready()
                for sat, epoch in system.epochs.items():
                    await directory.wait_for(sat, has_epoch(epoch), 5.0)
            yield system

    return start
