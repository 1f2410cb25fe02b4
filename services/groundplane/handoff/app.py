"""The handoff process: the manager and everything around it, served as
``groundplane.handoff.v1.HandoffService``.

::

    async with HandoffApp(HandoffAppSettings(broker=address, db_path=path), clock, catalog) as app:
        await app.wait_ready(60.0)
        ...  # clients call app.target

:class:`HandoffApp` owns, and starts in this order:

* the ground store (:class:`~groundplane.handoff.store.HandoffStore` at ``db_path``: sessions,
  turns, jobs and events survive a restart of the process on the same file);
* an MQTT client on the broker (client id ``groundplane-handoff``), the node contract's
  :class:`~groundplane.node.client.NodeDirectory` (every agent's retained status and load) and
  :class:`~groundplane.node.client.Requester` (instance id ``handoff``), adapted to the manager's
  :class:`~groundplane.handoff.nodes.NodePort` by
  :class:`~groundplane.handoff.node_adapter.RequesterNodes`;
* the pass windows (:class:`~groundplane.handoff.passes.RefreshedPasses`) and ISL line of sight
  (:class:`~groundplane.handoff.isl.IslLineOfSight`), both from the catalog source (tracking's
  follower in the process, a :class:`~groundplane.handoff.catalog.StaticCatalog` in-process);
* the :class:`~groundplane.handoff.manager.HandoffManager` (restores every session and job from
  the store) and its :class:`~groundplane.handoff.servicer.HandoffServicer` on a
  :class:`~groundplane.kernel.serving.GrpcServer`, plus ``/metrics`` over the manager's registry
  when ``metrics_port`` is set.

**Readiness.** The server starts NOT_SERVING (liveness SERVING) and becomes SERVING once all
three inputs are live: a first pass prediction exists (so sessions can be placed and planned),
the directory has heard at least one node (so the manager knows who is alive), and the manager,
started only then, has restored the store (``manager.wait_ready``). The manager waits for those
two because it judges every restored session at once: without passes or without the session's
node in the directory it would take a serving node for lost and move the session off it (the
start waits up to :data:`RESTORE_WAIT_S` for the nodes of restored sessions). It then stays
SERVING: when tracking or the broker goes away the manager keeps serving from its last
prediction and directory while the follower and the MQTT client reconnect.

**Exit (drain).** The server goes NOT_SERVING for ``unready_delay_s``, takes no new calls and lets
in-flight turns finish within ``drain_grace_s``; then the manager, the pass predictions and the
readiness watch are cancelled, the requester and MQTT client close and the store closes last.
Sessions stay open in the store: a process started again on the same file resumes them.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from groundplane.handoff import store as st
from groundplane.handoff.catalog import CatalogSource
from groundplane.handoff.isl import IslLineOfSight
from groundplane.handoff.manager import HandoffManager, ManagerConfig
from groundplane.handoff.node_adapter import RequesterNodes
from groundplane.handoff.passes import DEFAULT_HORIZON_S, RefreshedPasses
from groundplane.handoff.servicer import HandoffServicer
from groundplane.handoff.store import HandoffStore
from groundplane.kernel.clock import Clock
from groundplane.kernel.metrics_http import MetricsServer
from groundplane.kernel.serving import GrpcServer
from groundplane.mqtt.broker import BrokerAddress
from groundplane.mqtt.client import MqttClient
from groundplane.node.client import NodeDirectory, NodeView, Requester

log = structlog.get_logger("groundplane.handoff.app")

CLIENT_ID = "groundplane-handoff"
"""The MQTT client id of the handoff process (one per broker)."""
INSTANCE_ID = "handoff"
"""The requester's instance id: node replies come back on its reply topics."""
MANAGER_READY_S = 60.0
"""Wall seconds the manager may take to restore its sessions and jobs from the store."""
RESTORE_WAIT_S = 5.0
"""Wall seconds the manager's start waits for the nodes of its restored sessions to be heard."""


@dataclass(frozen=True)
class HandoffAppSettings:
    """Where the handoff process keeps its state, reaches the nodes and serves."""

    broker: BrokerAddress
    """The broker, with the service account's credentials."""
    db_path: Path | str
    """The ground store (SQLite)."""
    grpc_address: str = "127.0.0.1:0"
    manager: ManagerConfig = field(default_factory=ManagerConfig)
    pass_horizon_s: float = DEFAULT_HORIZON_S
    """Simulated seconds of passes each prediction covers (refreshed every half horizon)."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    """Port of ``/metrics`` (0 = a free one); not served when None."""
    drain_grace_s: float = 5.0
    unready_delay_s: float = 1.0


class HandoffApp:
    """The handoff process's parts, started on enter and drained on exit (see the module doc)."""

    def __init__(self, settings: HandoffAppSettings, clock: Clock, catalog: CatalogSource) -> None:
        self._settings = settings
        self._clock = clock
        self._catalog = catalog
        self._stack: AsyncExitStack | None = None
        self._server: GrpcServer | None = None
        self._manager: HandoffManager | None = None
        self._store: HandoffStore | None = None
        self._metrics: MetricsServer | None = None
        self._ready = asyncio.Event()
        self.directory = NodeDirectory()
        """The nodes as the handoff process hears them."""
        self.passes = RefreshedPasses(catalog, clock, horizon_s=settings.pass_horizon_s)

    @property
    def target(self) -> str:
        """``host:port`` of ``HandoffService``."""
        if self._server is None:
            raise RuntimeError("the handoff app is not running")
        return self._server.target

    @property
    def manager(self) -> HandoffManager:
        if self._manager is None:
            raise RuntimeError("the handoff app is not running")
        return self._manager

    @property
    def store(self) -> HandoffStore:
        if self._store is None:
            raise RuntimeError("the handoff app is not running")
        return self._store

    @property
    def metrics_url(self) -> str | None:
        """``/metrics`` when ``metrics_port`` is set."""
        return None if self._metrics is None else self._metrics.url

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self, timeout_s: float) -> None:
        """Until readiness is SERVING (TimeoutError after ``timeout_s`` wall seconds)."""
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            await self._start(stack)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        try:
            return await stack.__aexit__(exc_type, exc, tb)
        finally:
            self._ready.clear()
            self._server = self._manager = self._store = self._metrics = None

    async def _start(self, stack: AsyncExitStack) -> None:
        settings, clock = self._settings, self._clock
        store = HandoffStore(settings.db_path)
        stack.callback(store.close)
        self._store = store
        client = await stack.enter_async_context(
            MqttClient(settings.broker, client_id=CLIENT_ID, clock=clock)
        )
        await self.directory.attach(client)
        requester = await stack.enter_async_context(
            Requester(client, clock, instance_id=INSTANCE_ID, directory=self.directory)
        )
        manager = HandoffManager(
            RequesterNodes(requester),
            self.directory,
            clock,
            store,
            self.passes,
            config=settings.manager,
            isl_in_view=IslLineOfSight(self._catalog),
        )
        self._manager = manager
        server = GrpcServer(
            [HandoffServicer(manager, clock).binding()],
            address=settings.grpc_address,
            drain_grace_s=settings.drain_grace_s,
            unready_delay_s=settings.unready_delay_s,
            ready_at_start=False,
        )
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        running = [tasks.create_task(self.passes.run(), name="handoff-passes")]
        # Unwound after the server drained: the manager stops, then the TaskGroup exits.
        stack.push_async_callback(_cancel_all, running)
        await server.start()
        stack.push_async_callback(server.stop)
        self._server = server
        running.append(
            tasks.create_task(self._start_manager(tasks, running), name="handoff-readiness")
        )
        if settings.metrics_port is not None:
            self._metrics = await stack.enter_async_context(
                MetricsServer(
                    manager.metrics.registry, host=settings.metrics_host, port=settings.metrics_port
                )
            )

    async def _start_manager(
        self, tasks: asyncio.TaskGroup, running: list[asyncio.Task[None]]
    ) -> None:
        """Start the manager once it can judge its restored sessions (passes predicted, nodes
        heard), then set readiness SERVING when it has restored them."""
        await self.passes.wait_ready(None)
        await self._hear_nodes()
        manager = self.manager
        running.append(tasks.create_task(manager.run(), name="handoff-manager"))
        await manager.wait_ready(MANAGER_READY_S)
        assert self._server is not None
        await self._server.set_ready(True)
        self._ready.set()
        log.info("handoff_ready", target=self._server.target, nodes=len(self.directory.nodes()))

    async def _hear_nodes(self) -> None:
        """Until the directory has heard a node, and (for at most :data:`RESTORE_WAIT_S`) every
        node serving a session restored from the store: a node not heard yet would look dead to
        the manager and its sessions moved off it needlessly."""
        changed = asyncio.Event()

        def on_node(_view: NodeView) -> None:
            changed.set()

        serving = {r.satellite_id for r in self.store.sessions() if r.state == st.ACTIVE}
        remove = self.directory.add_listener(on_node)
        try:
            while not self.directory.nodes():
                changed.clear()
                await changed.wait()
            try:
                async with asyncio.timeout(RESTORE_WAIT_S):
                    while missing := {s for s in serving if self.directory.get(s) is None}:
                        log.info("handoff_waiting_for_nodes", satellites=sorted(missing))
                        changed.clear()
                        await changed.wait()
            except TimeoutError:
                log.warning("handoff_nodes_not_heard", satellites=sorted(missing))
        finally:
            remove()


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
