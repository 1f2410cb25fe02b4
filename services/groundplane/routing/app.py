"""Routing as a service of its own: its inputs followed, its table kept fresh, served over gRPC.

:class:`RoutingApp` (an async context manager) assembles one routing service from

* a **catalog** (:class:`CatalogSource`): in ``groundplane serve routing`` tracking's
  ``CatalogFollower`` (``groundplane.tracking.client``, the ``WatchCatalog`` stream), in the
  in-process ``groundplane up`` a :class:`StaticCatalog` over the system's elements and sites.
  From every catalog view routing builds its stations and its visibility
  (:class:`~groundplane.routing.service.TrackingVisibility` over the view's SGP4 batch) and
  predicts the upcoming passes (``find_passes`` in a worker thread, ``pass_horizon_s`` ahead).
  A new view (the follower's listener) is applied at once: the next table (after the service's
  0.1 s coalescing window) samples the new visibility without waiting for the tick, and the
  passes are predicted again. Passes are also predicted again every half horizon;
* an **MQTT client** (a service account): the node directory
  (:meth:`groundplane.node.client.NodeDirectory.attach`: retained ``gp/v1/node/+/status`` and
  ``…/load``) and the retained link states (``gp/v1/link/+/+/state``);
* a :class:`~groundplane.routing.policy.RoutingPolicy`, the table's ``tick_s`` and the
  ``pass_horizon_s``, all in simulated seconds of the injected clock.

It serves ``groundplane.routing.v1.RoutingService`` (:class:`RoutingServicer`) on a
:class:`~groundplane.kernel.serving.GrpcServer` built with ``ready_at_start=False``. **Readiness**
(health ``""`` and ``groundplane.routing.v1.RoutingService``) becomes SERVING once, in this
order, (1) a catalog view has arrived, (2) the passes of that view have been predicted and a
route table has been built from it (its stations and sightings), and (3) the node directory has
received at least one node's status (any state: a retained birth, drain or Will). It then stays
SERVING (a tracking or broker outage leaves the last catalog view and directory in use) until the
context exits: NOT_SERVING, drain, stop. Calls answered before readiness see a table without
the catalog's stations (no candidates: ``Route`` is UNAVAILABLE).

Metrics (:class:`~groundplane.routing.metrics.RoutingMetrics`, :attr:`RoutingApp.metrics`): the
catalog views applied, the route table version, the paths of the latest table and the ``Route``
decisions. The caller serves :attr:`RoutingMetrics.registry` when it wants ``/metrics``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

import structlog
from google.protobuf.message import DecodeError

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import DeadlineExceeded, GroundplaneError, InvalidArgument
from groundplane.kernel.serving import GrpcServer
from groundplane.link.v1 import link_pb2
from groundplane.mqtt import topics
from groundplane.mqtt.client import MqttClient, ReceivedMessage
from groundplane.node.client import ONLINE, NodeDirectory, NodeView
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.passes import Pass, find_passes
from groundplane.orbit.sites import Site
from groundplane.routing.energy import path_energy
from groundplane.routing.metrics import RoutingMetrics
from groundplane.routing.policy import (
    DEFAULT_POLICY,
    NodeState,
    RoutingPolicy,
    Sighting,
    VisibilitySource,
)
from groundplane.routing.service import (
    RoutingService,
    TrackingVisibility,
    link_quality_from_proto,
    stations_from_sites,
    upcoming_from_passes,
)
from groundplane.routing.servicer import RoutingServicer
from groundplane.routing.table import RouteTable

log = structlog.get_logger("groundplane.routing.app")

DEFAULT_TICK_S = 1.0
DEFAULT_PASS_HORIZON_S = 4 * 3600.0
"""Simulated seconds of passes predicted ahead (again every half horizon)."""


class CatalogSnapshot(Protocol):
    """What routing reads of one catalog view (``tracking.client.CatalogView`` has it)."""

    @property
    def version(self) -> int: ...

    @property
    def sites(self) -> Sequence[Site]: ...

    @property
    def batch(self) -> SatelliteBatch: ...


class CatalogSource(Protocol):
    """The current catalog view and its changes (``tracking.client.CatalogFollower`` is one)."""

    def current(self) -> CatalogSnapshot | None: ...

    def add_listener(self, callback: Callable[[CatalogSnapshot], None]) -> None:
        """Call ``callback`` on the event loop with every new view."""
        ...


@dataclass(frozen=True)
class StaticView:
    """A catalog view that is handed in rather than followed."""

    version: int
    sites: tuple[Site, ...]
    batch: SatelliteBatch


class StaticCatalog:
    """A fixed catalog (:class:`CatalogSource`): the in-process ``groundplane up`` and tests.

    :meth:`replace` publishes a new view (version + 1) to the listeners, as a follower does when
    tracking's catalog changes.
    """

    def __init__(self, batch: SatelliteBatch, sites: Sequence[Site], *, version: int = 1) -> None:
        self._view = StaticView(version, tuple(sites), batch)
        self._listeners: list[Callable[[CatalogSnapshot], None]] = []

    def current(self) -> StaticView:
        return self._view

    async def wait_ready(self, timeout_s: float) -> StaticView:
        """The view (there always is one)."""
        return self._view

    def add_listener(self, callback: Callable[[CatalogSnapshot], None]) -> None:
        self._listeners.append(callback)

    def replace(self, batch: SatelliteBatch, sites: Sequence[Site]) -> StaticView:
        self._view = StaticView(self._view.version + 1, tuple(sites), batch)
        for callback in list(self._listeners):
            callback(self._view)
        return self._view


class DirectoryNodes:
    """Routing's :class:`~groundplane.routing.policy.NodeSnapshotSource` over a NodeDirectory.

    Incremental: the directory replaces a satellite's (frozen) :class:`NodeView` whenever its
    status or load changes, so a :class:`NodeState` is built again only for views that are not
    the ones it was built from; the others are reused. A snapshot of 1,584 nodes of which a few
    changed costs a pass of identity checks, not 1,584 new states.
    """

    def __init__(self, directory: NodeDirectory) -> None:
        self._directory = directory
        self._cache: dict[str, tuple[NodeView, NodeState]] = {}
        self.states_built_total = 0
        """NodeStates built (for views not seen before): the cost a snapshot really paid."""

    def snapshot(self) -> dict[str, NodeState]:
        states: dict[str, NodeState] = {}
        cache = self._cache
        fresh: dict[str, tuple[NodeView, NodeState]] = {}
        for view in self._directory.nodes():
            held = cache.get(view.satellite_id)
            if held is not None and held[0] is view:
                state = held[1]
            else:
                state = self._state(view)
                self.states_built_total += 1
            fresh[view.satellite_id] = (view, state)
            states[view.satellite_id] = state
        self._cache = fresh
        return states

    @staticmethod
    def _state(view: NodeView) -> NodeState:
        load = view.load
        return NodeState(
            satellite_id=view.satellite_id,
            online=view.state == ONLINE,
            models=frozenset(view.served_models),
            epoch=view.epoch,
            queue_depth=load.queue_depth if load is not None else 0,
            in_flight=load.in_flight if load is not None else 0,
            free_slots=load.free_slots if load is not None else view.slots,
            energy=(
                path_energy(load.energy, load.updated_at.ToMicroseconds() / 1e6)
                if load is not None and load.HasField("energy")
                else None
            ),
        )


class _NoSightings:
    """Visibility before the first catalog view, or of a catalog without satellites or sites."""

    def sightings(self, at: datetime) -> list[Sighting]:
        return []


class RoutingApp:
    """One routing service: inputs, refresh loops and gRPC server (see the module docstring).

    ``directory`` lets an in-process system share its :class:`NodeDirectory` (attached here to
    ``mqtt``); by default the app has its own. ``visibility`` replaces the catalog's visibility
    (benchmarks; stations and passes still come from the catalog). ``on_passes`` is called with
    every new pass prediction (the in-process handoff manager's pass windows).
    """

    def __init__(  # noqa: PLR0913 - every input and tunable by keyword, each with a default
        self,
        catalog: CatalogSource,
        mqtt: MqttClient,
        clock: Clock,
        *,
        policy: RoutingPolicy = DEFAULT_POLICY,
        tick_s: float = DEFAULT_TICK_S,
        pass_horizon_s: float = DEFAULT_PASS_HORIZON_S,
        address: str = "127.0.0.1:0",
        drain_grace_s: float = 5.0,
        unready_delay_s: float = 1.0,
        directory: NodeDirectory | None = None,
        visibility: VisibilitySource | None = None,
        on_passes: Callable[[Sequence[Pass]], None] | None = None,
    ) -> None:
        if not (math.isfinite(pass_horizon_s) and pass_horizon_s > 0):
            raise InvalidArgument(
                f"pass_horizon_s must be positive simulated seconds, got {pass_horizon_s!r}"
            )
        self._catalog = catalog
        self._mqtt = mqtt
        self._clock = clock
        self._pass_horizon_s = float(pass_horizon_s)
        self._visibility_override = visibility
        self._on_passes = on_passes
        self.directory = directory if directory is not None else NodeDirectory()
        self.metrics = RoutingMetrics()
        self.service = RoutingService(
            clock=clock,
            stations=(),
            visibility=_NoSightings(),
            nodes=DirectoryNodes(self.directory),
            policy=policy,
            tick_s=tick_s,
        )
        self.server = GrpcServer(
            [RoutingServicer(self.service, self.metrics).binding()],
            address=address,
            drain_grace_s=drain_grace_s,
            unready_delay_s=unready_delay_s,
            ready_at_start=False,
        )
        self.links_up: set[tuple[str, str]] = set()
        """(station, satellite) ground links whose retained state says up."""
        self._view: CatalogSnapshot | None = None
        self._passes_due = asyncio.Event()
        self._passes_done = asyncio.Event()
        self._node_heard = asyncio.Event()
        self._ready = asyncio.Event()
        self._first_table: asyncio.Future[RouteTable] | None = None
        self._stack: AsyncExitStack | None = None
        self._closed = False

    # -- what is running -------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """``host:port`` of the routing gRPC server."""
        return self.server.target

    @property
    def table(self) -> RouteTable | None:
        """The latest route table (None before the first)."""
        return self.service.table

    @property
    def catalog_version(self) -> int | None:
        """The version of the catalog view in use (None before the first)."""
        return self._view.version if self._view is not None else None

    @property
    def ready(self) -> bool:
        return self.server.ready

    async def wait_table(self, timeout_s: float) -> RouteTable:
        """The first route table built from a catalog view (with its passes)."""
        future = self._first_table
        if future is None:
            raise RuntimeError("the routing app is not running")
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(future)
        except TimeoutError:
            raise DeadlineExceeded(
                f"routing built no route table from a catalog view within {timeout_s} s "
                f"(catalog view {'arrived' if self._view is not None else 'not yet arrived'})"
            ) from None

    async def wait_ready(self, timeout_s: float) -> None:
        """Until readiness is SERVING (see the module docstring)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except TimeoutError:
            table = self._first_table is not None and self._first_table.done()
            raise DeadlineExceeded(
                f"routing not ready within {timeout_s} s: catalog view "
                f"{'arrived' if self._view is not None else 'missing'}, first table "
                f"{'built' if table else 'not built'}, nodes "
                f"{'heard' if self._node_heard.is_set() else 'not heard'}"
            ) from None

    # -- life cycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._first_table = asyncio.get_running_loop().create_future()
            stack.callback(self._first_table.cancel)
            stack.callback(self._close)
            stack.callback(self.directory.add_listener(self._on_node))
            if self.directory.nodes():
                self._node_heard.set()
            await self.directory.attach(self._mqtt)
            await self._mqtt.subscribe(topics.LINK_STATE_FILTER, self._on_link_state)
            self._catalog.add_listener(self._on_view)
            current = self._catalog.current()
            if current is not None:
                self._on_view(current)
            # Unwinding: the server drains first (tables still refresh meanwhile), then the
            # loops are cancelled and awaited.
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            background: list[asyncio.Task[None]] = []
            stack.callback(lambda: [task.cancel() for task in background])
            await self.server.start()
            stack.push_async_callback(self.server.stop)
            background.append(tasks.create_task(self._passes_loop(), name="routing-passes"))
            background.append(tasks.create_task(self._serve_tables(), name="routing-tables"))
            background.append(tasks.create_task(self._readiness(), name="routing-readiness"))
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        log.info("routing_started", target=self.target)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    def _close(self) -> None:
        self._closed = True

    # -- inputs ----------------------------------------------------------------------------------

    def _on_view(self, view: CatalogSnapshot) -> None:
        """A catalog view arrived: new stations and visibility now, new passes soon."""
        if self._closed or (self._view is not None and view.version == self._view.version):
            return
        sites = tuple(view.sites)
        empty = not view.batch.ids or not sites
        visibility: VisibilitySource = (
            self._visibility_override
            if self._visibility_override is not None
            else _NoSightings()
            if empty
            else TrackingVisibility(view.batch, sites)
        )
        self.service.set_catalog(stations_from_sites(sites), visibility)
        self._view = view
        self.metrics.catalog_views.inc()
        self._passes_due.set()
        log.info(
            "routing_catalog",
            version=view.version,
            satellites=len(view.batch.ids),
            sites=len(sites),
        )

    def _on_node(self, _view: NodeView) -> None:
        self._node_heard.set()
        self.service.invalidate()

    async def _on_link_state(self, message: ReceivedMessage) -> None:
        if not message.payload:
            return
        state = link_pb2.LinkState()
        try:
            state.ParseFromString(message.payload)
            quality = link_quality_from_proto(state)
        except (DecodeError, GroundplaneError):
            log.warning("link_state_rejected", topic=message.topic)
            return
        key = (quality.station_id, quality.satellite_id)
        if quality.up:
            self.links_up.add(key)
        else:
            self.links_up.discard(key)
        self.service.update_link(quality)

    # -- loops -----------------------------------------------------------------------------------

    async def _passes_loop(self) -> None:
        """Predict passes for the view in use: at each new view and every half horizon."""
        while True:
            await self._passes_due.wait()
            self._passes_due.clear()
            view = self._view
            assert view is not None
            start = self._clock.now()
            stop = start + timedelta(seconds=self._pass_horizon_s)
            passes: list[Pass] = []
            if view.batch.ids and view.sites:
                passes = await asyncio.to_thread(
                    find_passes, view.batch, tuple(view.sites), start, stop
                )
            self.service.set_upcoming(upcoming_from_passes(passes))
            if self._on_passes is not None:
                self._on_passes(passes)
            self._passes_done.set()
            log.info("routing_passes", catalog_version=view.version, passes=len(passes))
            half_horizon_wall_s = self._pass_horizon_s / 2 / self._clock.speed
            try:
                async with asyncio.timeout(half_horizon_wall_s):
                    await self._passes_due.wait()
            except TimeoutError:
                self._passes_due.set()

    async def _serve_tables(self) -> None:
        """The first table from a catalog view (after its passes), then the refresh loop."""
        await self._passes_done.wait()
        table = await self.service.refresh()
        assert self._first_table is not None
        self._first_table.set_result(table)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.service.run(), name="routing-refresh")
            group.create_task(self._table_metrics(), name="routing-table-metrics")

    async def _table_metrics(self) -> None:
        async for table in self.service.watch():
            self.metrics.table(table)

    async def _readiness(self) -> None:
        assert self._first_table is not None
        await asyncio.shield(self._first_table)
        await self._node_heard.wait()
        await self.server.set_ready(True)
        self._ready.set()
        log.info("routing_ready", target=self.target, catalog_version=self.catalog_version)
