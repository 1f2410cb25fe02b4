"""A handoff system per test: private Mosquitto, a link emulator driven by a synthetic pass
schedule, one node agent per satellite (each in its own task, so one can be killed), and handoff
managers that can be killed and restarted on the same SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from groundplane.handoff.manager import HandoffManager, ManagerConfig
from groundplane.handoff.node_adapter import RequesterNodes
from groundplane.handoff.planner import IslInView, PassSchedule
from groundplane.handoff.store import HandoffStore
from groundplane.kernel.clock import SimulatedClock
from groundplane.links.emulator import LinkEmulator
from groundplane.links.model import LinkConfig
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import Backoff, MqttClient
from groundplane.node.agent import AgentConfig, EpochSource, NodeAgent
from groundplane.node.backends import GenerateRequest, SyntheticBackend, SyntheticModelSpec
from groundplane.node.directory import ONLINE, NodeDirectory
from groundplane.node.engine import Engine, EngineConfig
from groundplane.node.requester import Requester

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)
STATION = "gs1"
SATELLITES = ("sat-a", "sat-b", "sat-c")
FAST_BACKOFF = Backoff(base_s=0.05, factor=1.6, cap_s=0.5, jitter=0.2)
CHAT = SyntheticModelSpec("chat", decode_s_per_token=0.01, min_answer_tokens=3, max_answer_tokens=8)
"""A quick conversational model."""
BATCH = SyntheticModelSpec(
    "batch", decode_s_per_token=1.0, min_answer_tokens=5, max_answer_tokens=5
)
"""A slow batch model: every item takes 5 simulated seconds."""
ENGINE_CONFIG = EngineConfig(bytes_per_token={"chat": 65_536})
"""The modelled state per token the nodes report (the manager's settings say the same)."""


def cycling_schedule(count: int = 4) -> PassSchedule:
    """A, B, C rise in turn: each in view 60 s of every 150 s, the next rising 50 s later, so
    there is always one satellite in view and 10 s of overlap at every change."""
    return PassSchedule.periodic(
        STATION,
        SATELLITES,
        EPOCH - timedelta(seconds=1),
        visible_s=60.0,
        period_s=150.0,
        stagger_s=50.0,
        count=count,
    )


class CountingBackend(SyntheticBackend):
    """The synthetic backend that also records every execution as (satellite, request id)."""

    def __init__(
        self,
        satellite_id: str,
        specs: Sequence[SyntheticModelSpec],
        clock: SimulatedClock,
        log: list[tuple[str, str]],
    ) -> None:
        super().__init__(specs, clock)
        self._sat = satellite_id
        self._log = log

    def generate(self, request: GenerateRequest) -> AsyncIterator[str]:
        self._log.append((self._sat, request.request_id))
        return super().generate(request)


@dataclass
class RunningManager:
    manager: HandoffManager
    task: asyncio.Task[None]
    directory: NodeDirectory


@dataclass
class System:
    broker: PrivateBroker
    clock: SimulatedClock
    schedule: PassSchedule
    store_path: Path
    tasks: asyncio.TaskGroup
    config: ManagerConfig
    isl_in_view: IslInView | None
    executions: list[tuple[str, str]] = field(default_factory=list)
    nodes: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    engines: dict[str, Engine] = field(default_factory=dict)
    managers: list[RunningManager] = field(default_factory=list)
    emulator: LinkEmulator | None = None

    @property
    def manager(self) -> HandoffManager:
        return self.managers[-1].manager

    def at(self, seconds: float) -> datetime:
        return EPOCH + timedelta(seconds=seconds)

    async def sleep_until(self, seconds: float) -> None:
        await self.clock.sleep((self.at(seconds) - self.clock.now()).total_seconds())

    def kill_node(self, satellite_id: str) -> None:
        """Cancel the node's agent and engine abruptly (no drain)."""
        self.nodes.pop(satellite_id).cancel()

    async def start_manager(self, name: str) -> HandoffManager:
        started: asyncio.Future[RunningManager] = asyncio.get_running_loop().create_future()
        self.tasks.create_task(self._manager_main(name, started), name=f"test-{name}")
        running = await asyncio.wait_for(started, 10.0)
        self.managers.append(running)
        await running.manager.wait_ready()
        for sat in self.nodes:
            await running.directory.wait_for(sat, lambda v: v.state == ONLINE, 10.0)
        return running.manager

    def kill_manager(self) -> None:
        """Cancel the newest manager with its MQTT client (as if its process died)."""
        self.managers[-1].task.cancel()

    async def _manager_main(self, name: str, started: asyncio.Future[RunningManager]) -> None:
        directory = NodeDirectory()
        async with MqttClient(
            self.broker.address,
            client_id=name,
            clock=self.clock,
            backoff=FAST_BACKOFF,
            io_timeout_s=3.0,
        ) as client:
            await directory.attach(client)
            await client.wait_connected()
            async with Requester(
                client, self.clock, instance_id=name, directory=directory
            ) as requester:
                manager = HandoffManager(
                    RequesterNodes(requester),
                    directory,
                    self.clock,
                    HandoffStore(self.store_path),
                    self.schedule,
                    config=self.config,
                    isl_in_view=self.isl_in_view,
                )
                task = asyncio.current_task()
                assert task is not None
                started.set_result(RunningManager(manager, task, directory))
                await manager.run()

    async def _node_main(self, sat: str, ready: asyncio.Future[None]) -> None:
        backend = CountingBackend(sat, (CHAT, BATCH), self.clock, self.executions)
        async with Engine(backend, self.clock, ENGINE_CONFIG) as engine:
            self.engines[sat] = engine
            agent = NodeAgent(
                sat,
                self.broker.node_address(sat),
                engine,
                self.clock,
                epochs=EpochSource(time.time_ns),
                config=AgentConfig(
                    keepalive_s=5, load_interval_s=0.5, io_timeout_s=3.0, backoff=FAST_BACKOFF
                ),
            )
            runner = asyncio.ensure_future(agent.run())
            try:
                await agent.wait_ready()
                ready.set_result(None)
                await runner
            finally:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner


SystemFactory = Callable[..., contextlib.AbstractAsyncContextManager[System]]


@pytest.fixture
def make_system(tmp_path: Path) -> SystemFactory:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")

    @contextlib.asynccontextmanager
    async def start(
        schedule: PassSchedule,
        *,
        speed: float = 25.0,
        config: ManagerConfig | None = None,
        isl_in_view: IslInView | None = None,
        satellites: Sequence[str] = SATELLITES,
    ) -> AsyncIterator[System]:
        clock = SimulatedClock(EPOCH, speed=speed)
        async with contextlib.AsyncExitStack() as stack:
            broker = await stack.enter_async_context(
                PrivateBroker(nodes=satellites, workdir=tmp_path / "broker")
            )
            links = await stack.enter_async_context(
                MqttClient(broker.address, client_id="links", clock=clock, backoff=FAST_BACKOFF)
            )
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            system = System(
                broker,
                clock,
                schedule,
                tmp_path / "handoff.sqlite",
                tasks,
                config or ManagerConfig(),
                isl_in_view,
            )
            emulator = LinkEmulator(
                links,
                clock,
                schedule.ground_geometry(),
                config=LinkConfig(rate_bps=1e9),
                tick_s=0.25,
            )
            system.emulator = emulator
            emulator_task = tasks.create_task(emulator.run(), name="test-link-emulator")
            await emulator.wait_ready()
            for sat in satellites:
                ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                system.nodes[sat] = tasks.create_task(
                    system._node_main(sat, ready), name=f"test-node:{sat}"
                )
                await asyncio.wait_for(ready, 10.0)
            try:
                yield system
            finally:
                for running in system.managers:
                    running.task.cancel()
                for node in system.nodes.values():
                    node.cancel()
                emulator_task.cancel()

    return start
