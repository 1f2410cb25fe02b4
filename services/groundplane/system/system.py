"""The whole system on one machine, supervised in one asyncio TaskGroup.

:class:`GroundplaneSystem` starts, in order:

1. the **broker**: a private Mosquitto (:class:`~groundplane.mqtt.broker.PrivateBroker`, which
   creates the service account and one account per satellite) or an existing broker given by
   URL (its accounts must exist: the URL's user is the service account, node ``<sat>`` logs in as
   user ``<sat>`` with the node password);
2. **tracking** (``groundplane.tracking.v1.TrackingService`` on loopback) with the catalog and
   the stations;
3. **links**: the :class:`~groundplane.links.emulator.LinkEmulator` driven by
   :class:`~groundplane.links.geometry.TrackedGroundGeometry` on a tick of simulated time;
4. **nodes**: one agent per satellite, all multiplexed over one MQTT connection by one
   :class:`~groundplane.node.shard.NodeShard` (account ``gp-shard-up``, liveness on
   ``gp/v1/shard/up/status``) on the private broker; with an existing broker each agent has its
   own connection and account in a :class:`~groundplane.node.host.NodeHost`;
5. **routing**: :class:`~groundplane.routing.app.RoutingApp` over a static catalog of the
   system's elements and stations, on its own MQTT client (the system's node directory, the
   retained link states), served over gRPC;
6. **handoff**: the handoff process's parts, in-process
   (:class:`~groundplane.handoff.app.HandoffApp`: the manager on its own MQTT client, requester
   and node directory, a SQLite store in ``handoff_dir`` (a temporary folder when unset), pass
   windows and ISL line of sight from a :class:`~groundplane.handoff.catalog.StaticCatalog` of
   the run's elements and stations); ``groundplane.handoff.v1.HandoffService`` on loopback;
7. the **gateway** (``groundplane.gateway.v1.InferenceService``) following the routing service's
   ``WatchRouteTable`` stream and sending session turns to ``HandoffService`` over gRPC
   (loopback), ready once it holds a table;
8. the synthetic **load** (:mod:`groundplane.system.load`) and the **jobs**
   (:class:`~groundplane.system.handoff.JobLoad`), when configured.

Every task is named and owned by the system's TaskGroup (or by a component's own group); a
failing task cancels the rest and the error propagates out of :meth:`GroundplaneSystem.run`.
:meth:`GroundplaneSystem.stop` shuts down in reverse: jobs, load (outstanding calls finish), gateway
(drains), handoff (this run's sessions are closed, the manager stops), nodes (drain), routing and
links, tracking, broker.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from groundplane.gateway.app import GatewayApp, GatewaySettings
from groundplane.gateway.auth import TenantRegistry
from groundplane.gateway.service import GatewayConfig
from groundplane.handoff.app import HandoffApp, HandoffAppSettings
from groundplane.handoff.catalog import StaticCatalog
from groundplane.handoff.manager import HandoffManager, ManagerConfig
from groundplane.handoff.planner import HandoffSettings
from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import GroundplaneError, InvalidArgument
from groundplane.links.emulator import LinkEmulator
from groundplane.links.geometry import TrackedGroundGeometry
from groundplane.links.model import LinkConfig
from groundplane.mqtt.broker import BrokerAddress, PrivateBroker
from groundplane.mqtt.client import MqttClient
from groundplane.node.agent import AgentConfig, EpochSource, NodeAgent
from groundplane.node.backends import SyntheticModelSpec
from groundplane.node.directory import ONLINE, NodeDirectory, NodeView
from groundplane.node.engine import Engine, EngineConfig
from groundplane.node.host import HostedNode, NodeHost
from groundplane.node.power import shard_power
from groundplane.node.shard import NodeShard, ShardConfig
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.sites import Site
from groundplane.routing.app import RoutingApp
from groundplane.routing.client import WatchedTableSource
from groundplane.routing.policy import RoutingPolicy
from groundplane.routing.table import RouteTable
from groundplane.scenario import (
    DEFAULT_MODEL,
    DEFAULT_POLICY,
    DEFAULT_TOKEN,
    GroundUser,
    default_tenants,
)
from groundplane.system.handoff import CountingBackend, ExecutionLog, JobLoad, ManagerJobs
from groundplane.system.load import GroundLoad
from groundplane.system.report import RunStats, energy_counters
from groundplane.system.run import (
    STARTUP_TIMEOUT_S,
    STOP_TIMEOUT_S,
    bounded,
    cancel_and_wait,
    close_sessions,
    start_loads,
    wait_first_table,
)
from groundplane.tracking.app import TrackingApp, build_tracking

log = structlog.get_logger("groundplane.system")

UP_SHARD_ID = "up"
"""The nodes shard of ``groundplane up`` on its private broker (account ``gp-shard-up``)."""
DEFAULT_HANDOFF_MARGIN_S = 5.0
"""Simulated seconds a handoff finishes before LOS beyond the modelled transfer (the manager adds
the control overhead it measures)."""
DEFAULT_MIN_DWELL_S = 30.0
"""Least simulated time a successor must stay in view after a handoff."""
DEFAULT_JOB_ITEMS = 20
MANAGER_WALL_S = 2.0
"""Wall seconds one node attempt or state export/import of the manager may take (at least 10
simulated seconds)."""


@dataclass(frozen=True)
class SystemConfig:
    """Everything one system run needs. Times are simulated seconds unless named ``wall``."""

    elements: Sequence[ElementSet]
    stations: Sequence[Site]
    users: Sequence[GroundUser] = ()
    rate_rps: float = 0.0
    sessions: int = 0
    jobs: int = 0
    job_items: int = DEFAULT_JOB_ITEMS
    handoff: HandoffSettings = field(
        default_factory=lambda: HandoffSettings(
            lead_margin_s=DEFAULT_HANDOFF_MARGIN_S, min_dwell_s=DEFAULT_MIN_DWELL_S
        )
    )
    handoff_dir: Path | None = None
    """Folder of the handoff store (``handoff.sqlite``); a temporary folder when None."""
    handoff_address: str = "127.0.0.1:0"
    gateway_metrics_port: int | None = None
    """Port of the gateway's ``/metrics`` on loopback (0 = a free one); not served when None."""
    handoff_metrics_port: int | None = None
    """Port of the handoff manager's ``/metrics`` on loopback (0 = a free one); None: not served."""
    broker_url: str | None = None
    node_password: str | None = None
    broker_reader: str | None = None
    """Username of a read-only account (``gp-…``) to create on the private broker."""
    model: SyntheticModelSpec = DEFAULT_MODEL
    policy: RoutingPolicy = DEFAULT_POLICY
    tenants: Mapping[str, Mapping[str, object]] = field(default_factory=default_tenants)
    token: str = DEFAULT_TOKEN
    link_config: LinkConfig = field(default_factory=LinkConfig)
    link_tick_s: float = 1.0
    route_tick_s: float = 1.0
    pass_horizon_s: float = 4 * 3600.0
    tracking_address: str = "127.0.0.1:0"
    gateway_address: str = "127.0.0.1:0"
    gateway_http_port: int | None = None
    """Port of the gateway's OpenAI-compatible HTTP API on loopback (0 = a free one); not served
    when None."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    load_interval_wall_s: float = 2.0
    load_deadline_wall_s: float = 10.0
    gateway_deadline_wall_s: float = 10.0
    keep_trace: bool = True
    workdir: Path | None = None
    energy: bool = False
    """Model the nodes' power and heat (``up --energy``; node/energy.py) and report it."""
    otlp_endpoint: str | None = None
    """OTLP collector every service process exports its spans to (``serve --otlp-endpoint``);
    None: the children read the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` of their environment."""

    def __post_init__(self) -> None:
        if not self.elements:
            raise InvalidArgument("the system needs at least one satellite, got none")
        if not self.stations:
            raise InvalidArgument("the system needs at least one ground station, got none")
        for name in ("link_tick_s", "route_tick_s", "pass_horizon_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgument(f"{name} must be positive seconds, got {value!r}")
        if (self.rate_rps > 0 or self.sessions > 0) and not self.users:
            raise InvalidArgument("a load (rate or sessions) needs ground users, got none")
        if self.jobs < 0 or self.job_items < 1:
            raise InvalidArgument(
                f"expected --jobs ≥ 0 and --job-items ≥ 1, got {self.jobs} and {self.job_items}"
            )
        if self.broker_url is not None and self.broker_reader is not None:
            raise InvalidArgument(
                "a read-only broker account is created only on the private broker; with an "
                "existing broker (--broker) make the account there, got both"
            )
        if self.broker_url is not None and self.node_password is None:
            raise InvalidArgument(
                "with an existing broker the node agents need their password (every node "
                "account is user <satellite id> with this password), got none"
            )


@dataclass(frozen=True)
class Status:
    """What the live view shows."""

    stats: RunStats
    visible_nodes: int
    links_up: int
    online_nodes: int


class GroundplaneSystem:
    """One running system; :meth:`run` serves until :meth:`stop` (or a task fails)."""

    def __init__(self, config: SystemConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.stats = RunStats(keep_trace=config.keep_trace)
        self.batch = SatelliteBatch(
            [e.catalog_id for e in config.elements], [e.to_satrec() for e in config.elements]
        )
        self.stations = tuple(config.stations)
        self.directory = NodeDirectory()
        self.routing: RoutingApp | None = None
        self.gateway: GatewayApp | None = None
        self.tracking: TrackingApp | None = None
        self.broker_address: BrokerAddress | None = None
        self.handoff_metrics_url: str | None = None
        """The handoff manager's ``/metrics`` when ``config.handoff_metrics_port`` is set."""
        self.reader_address: BrokerAddress | None = None
        """The read-only broker account when ``config.broker_reader`` is set."""
        self.load: GroundLoad | None = None
        self.jobs: JobLoad | None = None
        self.handoff: HandoffManager | None = None
        self.executions = ExecutionLog()
        self.run_id = uuid.uuid4().hex[:8]
        """Distinguishes this run's session and job ids from earlier runs on the same store."""
        self._handoff_app: HandoffApp | None = None
        self._handoff_after_id = 0
        self._started_at: datetime | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()

    # -- what is running ----------------------------------------------------------------------

    @property
    def gateway_target(self) -> str:
        if self.gateway is None:
            raise RuntimeError("the system is not running")
        return self.gateway.target

    @property
    def gateway_http_url(self) -> str | None:
        """The gateway's OpenAI base URL (``http://127.0.0.1:PORT/v1``) when
        ``config.gateway_http_port`` is set."""
        return None if self.gateway is None else self.gateway.http_base_url

    @property
    def gateway_metrics_url(self) -> str | None:
        """The gateway's ``/metrics`` when ``config.gateway_metrics_port`` is set."""
        if self.gateway is None or self.gateway.metrics_port is None:
            return None
        return f"http://127.0.0.1:{self.gateway.metrics_port}/metrics"

    @property
    def routing_target(self) -> str:
        if self.routing is None:
            raise RuntimeError("the system is not running")
        return self.routing.target

    @property
    def links_up(self) -> set[tuple[str, str]]:
        """(station, satellite) ground links up, as routing last heard them."""
        return self.routing.links_up if self.routing is not None else set()

    @property
    def handoff_target(self) -> str:
        if self._handoff_app is None:
            raise RuntimeError("the system is not running")
        return self._handoff_app.target

    async def refresh_counters(self) -> None:
        """Bring the handoff and job counters of :attr:`stats` up to date."""
        if self.handoff is not None:
            while True:
                page = self.handoff.list_handoffs(after_id=self._handoff_after_id, limit=10_000)
                if not page:
                    break
                for event in page:
                    self.stats.handoffs.count(event.state)
                self._handoff_after_id = page[-1].event_id
        if self.jobs is not None:
            await self.jobs.update()
        if self.config.energy:
            self.stats.energy = energy_counters(self.directory)

    @property
    def tracking_target(self) -> str:
        if self.tracking is None:
            raise RuntimeError("the system is not running")
        return self.tracking.server.target

    def route_table(self) -> RouteTable | None:
        return self.routing.table if self.routing is not None else None

    def status(self) -> Status:
        table = self.route_table()
        visible = (
            {p.satellite_id for s in table.stations for p in s.paths}
            if table is not None
            else set()
        )
        online = sum(1 for view in self.directory.nodes() if view.state == ONLINE)
        return Status(self.stats, len(visible), len(self.links_up), online)

    async def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()

    def stop(self) -> None:
        self._stop.set()

    # -- assembly -----------------------------------------------------------------------------

    async def run(
        self, on_ready: Callable[[GroundplaneSystem], Awaitable[None]] | None = None
    ) -> None:
        """Start everything, call ``on_ready`` (a task of the group), serve until stopped."""
        config = self.config
        async with AsyncExitStack() as stack:
            broker_address, node_address, shard_address = await self._broker(stack)
            self.broker_address = broker_address
            tracking = build_tracking(
                self.clock,
                address=config.tracking_address,
                elements=config.elements,
                sites=config.stations,
                unready_delay_s=0.0,
                drain_grace_s=1.0,
            )
            stack.callback(tracking.close)
            await tracking.server.start()
            stack.push_async_callback(tracking.server.stop)
            self.tracking = tracking

            links_client = await stack.enter_async_context(
                MqttClient(broker_address, client_id="groundplane-links", clock=self.clock)
            )
            routing_client = await stack.enter_async_context(
                MqttClient(broker_address, client_id="groundplane-routing", clock=self.clock)
            )
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            background: list[asyncio.Task[None]] = []
            stack.callback(lambda: [task.cancel() for task in background])

            # links
            geometry = TrackedGroundGeometry(self.batch, self.stations)
            emulator = LinkEmulator(
                links_client,
                self.clock,
                geometry,
                config=config.link_config,
                tick_s=config.link_tick_s,
                # Known ids: a message to a satellite out of view counts as link-down on its own
                # link, not as addressed to an unknown id.
                stations=[station.id for station in self.stations],
                satellites=self.batch.ids,
            )
            background.append(tasks.create_task(emulator.run(), name="links-emulator"))
            await emulator.wait_ready(STARTUP_TIMEOUT_S)

            # routing
            await routing_client.wait_connected(STARTUP_TIMEOUT_S)
            routing = await stack.enter_async_context(
                RoutingApp(
                    StaticCatalog(self.batch, self.stations),
                    routing_client,
                    self.clock,
                    policy=config.policy,
                    tick_s=config.route_tick_s,
                    pass_horizon_s=config.pass_horizon_s,
                    drain_grace_s=0.5,
                    unready_delay_s=0.0,
                    directory=self.directory,
                )
            )
            self.routing = routing
            await routing.wait_table(STARTUP_TIMEOUT_S)

            # nodes (stopped after the gateway: the exit stack unwinds in reverse)
            epochs = await self._start_nodes(stack, tasks, node_address, shard_address)
            for sat, epoch in epochs.items():
                await self.directory.wait_for(sat, _has_epoch(epoch), STARTUP_TIMEOUT_S)

            manager = await self._start_handoff(stack, broker_address)

            # gateway
            tables = WatchedTableSource(routing.target)
            watch = tasks.create_task(tables.run(), name="gateway-route-table-watch")
            # Cancelled before routing stops, so that its stream does not break on the way out.
            stack.push_async_callback(cancel_and_wait, watch)
            gateway = await stack.enter_async_context(
                GatewayApp(
                    GatewaySettings(
                        broker=broker_address,
                        tenants=TenantRegistry.from_mapping(config.tenants),
                        instance_id="gw-up",
                        grpc_address=config.gateway_address,
                        config=GatewayConfig(default_deadline_s=config.gateway_deadline_wall_s),
                        drain_grace_s=2.0,
                        unready_delay_s=0.0,
                        metrics_port=config.gateway_metrics_port,
                        http_address=(
                            None
                            if config.gateway_http_port is None
                            else f"127.0.0.1:{config.gateway_http_port}"
                        ),
                        handoff_target=self.handoff_target,
                    ),
                    self.clock,
                    tables=tables,
                )
            )
            self.gateway = gateway
            await wait_first_table(tables, config.model.name, "the gateway")
            await gateway.wait_ready(STARTUP_TIMEOUT_S)

            self.load, self.jobs = start_loads(
                stack,
                tasks,
                config,
                self.clock,
                self.stats,
                run_id=self.run_id,
                gateway_target=gateway.target,
                job_service=ManagerJobs(manager),
                executions=self.executions,
            )
            self._ready.set()
            if on_ready is not None:
                background.append(tasks.create_task(self._call(on_ready), name="system-on-ready"))
            await self._stop.wait()
            log.info("system_stopping")

    async def _start_handoff(
        self, stack: AsyncExitStack, broker_address: BrokerAddress
    ) -> HandoffManager:
        """The handoff app over the run's elements and stations (stopped before the nodes)."""
        config = self.config
        folder = config.handoff_dir
        if folder is None:
            folder = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="groundplane-handoff-"))
            )
        folder.mkdir(parents=True, exist_ok=True)
        manager_s = max(10.0, MANAGER_WALL_S * self.clock.speed)
        app = HandoffApp(
            HandoffAppSettings(
                broker=broker_address,
                db_path=folder / "handoff.sqlite",
                grpc_address=config.handoff_address,
                manager=ManagerConfig(
                    settings=config.handoff, turn_attempt_s=manager_s, operation_s=manager_s
                ),
                pass_horizon_s=config.pass_horizon_s,
                metrics_port=config.handoff_metrics_port,
                drain_grace_s=0.5,
                unready_delay_s=0.0,
            ),
            self.clock,
            StaticCatalog(self.batch, self.stations),
        )
        await stack.enter_async_context(app)
        stack.push_async_callback(self._stop_handoff, app)
        await app.wait_ready(STARTUP_TIMEOUT_S)
        for view in self.directory.nodes():
            await app.directory.wait_for(
                view.satellite_id, _has_epoch(view.epoch), STARTUP_TIMEOUT_S
            )
        self._handoff_app = app
        self._handoff_after_id = app.store.last_event_id()
        self._started_at = self.clock.now()
        self.handoff = app.manager
        self.handoff_metrics_url = app.metrics_url
        return app.manager

    async def _stop_handoff(self, app: HandoffApp) -> None:
        """Close this run's sessions (fencing them on their nodes) and count, before the app
        drains and its manager stops."""
        store, started, manager = app.store, self._started_at, app.manager
        if started is not None:
            # An earlier run's sessions (a kept --data-dir) stay open for the next run.
            ours = [r.session_id for r in store.sessions() if r.created_at >= started]
            await close_sessions(ours, lambda session_id: _close_session(manager, session_id))
        await self.refresh_counters()
        # The store closes next: the counters are final, nothing reads the manager any more.
        self.handoff, self.jobs = None, None

    async def _call(self, on_ready: Callable[[GroundplaneSystem], Awaitable[None]]) -> None:
        await on_ready(self)

    async def _start_nodes(
        self,
        stack: AsyncExitStack,
        tasks: asyncio.TaskGroup,
        node_address: Callable[[str], BrokerAddress],
        shard_address: BrokerAddress | None,
    ) -> dict[str, int]:
        """Every satellite's agent: one shard over one connection on the private broker, one
        connection per agent on an existing broker; the epoch of each once all are born."""
        config = self.config
        agent_config = AgentConfig(load_interval_s=config.load_interval_wall_s)
        if shard_address is None:
            host = NodeHost(
                [
                    HostedNode(
                        sat,
                        node_address(sat),
                        CountingBackend([config.model], self.clock, self.executions),
                        config.engine,
                    )
                    for sat in self.batch.ids
                ],
                self.clock,
                agent_config=agent_config,
            )
            host_task = tasks.create_task(host.run(), name="node-host")
            stack.push_async_callback(self._stop_host, host, host_task)
            return await host.wait_ready(STARTUP_TIMEOUT_S)
        agents = []
        for sat in self.batch.ids:
            engine = await stack.enter_async_context(
                Engine(
                    CountingBackend([config.model], self.clock, self.executions),
                    self.clock,
                    config.engine,
                )
            )
            agents.append(
                NodeAgent(
                    sat,
                    shard_address,
                    engine,
                    self.clock,
                    epochs=EpochSource(time.time_ns),
                    config=agent_config,
                )
            )
        shard = NodeShard(
            UP_SHARD_ID,
            shard_address,
            agents,
            self.clock,
            epochs=EpochSource(time.time_ns),
            config=ShardConfig(load_interval_s=config.load_interval_wall_s),
            power=(
                shard_power(
                    {e.catalog_id: e for e in config.elements},
                    list(self.batch.ids),
                    dict.fromkeys(self.batch.ids, config.model.name),
                )
                if config.energy
                else None
            ),
        )
        shard_task = tasks.create_task(shard.run(), name=f"nodes-shard:{UP_SHARD_ID}")
        stack.push_async_callback(self._stop_host, shard, shard_task)
        return await shard.wait_ready(STARTUP_TIMEOUT_S)

    async def _broker(
        self, stack: AsyncExitStack
    ) -> tuple[BrokerAddress, Callable[[str], BrokerAddress], BrokerAddress | None]:
        """The service account, each node's account and the nodes shard's (private broker)."""
        config = self.config
        if config.broker_url is None:
            readers = () if config.broker_reader is None else (config.broker_reader,)
            broker = await stack.enter_async_context(
                PrivateBroker(
                    nodes=self.batch.ids,
                    workdir=config.workdir,
                    readers=readers,
                    shards={UP_SHARD_ID: self.batch.ids},
                )
            )
            if config.broker_reader is not None:
                self.reader_address = broker.reader_address(config.broker_reader)
            return broker.address, broker.node_address, broker.shard_address(UP_SHARD_ID)
        address = BrokerAddress.from_url(config.broker_url)
        password = config.node_password or ""

        def node_address(sat: str) -> BrokerAddress:
            return address.with_credentials(sat, password)

        return address, node_address, None

    async def _stop_host(self, host: NodeHost | NodeShard, task: asyncio.Task[None]) -> None:
        host.stop()
        await bounded(task, STOP_TIMEOUT_S)


async def _close_session(manager: HandoffManager, session_id: str) -> None:
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await manager.close_session(session_id)
    except (TimeoutError, GroundplaneError) as error:
        log.warning("handoff_close_failed", session_id=session_id, error=str(error))


def _has_epoch(epoch: int) -> Callable[[NodeView], bool]:
    return lambda view: view.epoch == epoch
