"""RoutingApp on a real Mosquitto and a real gRPC server: readiness, catalog changes, metrics.

The catalog is a fake follower (the same surface as ``tracking.client.CatalogFollower``) or a
:class:`StaticCatalog`; node births are retained ``NodeStatus`` messages published on the broker.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.serving import READINESS
from groundplane.mqtt import topics
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import MqttClient
from groundplane.node.v1 import node_pb2
from groundplane.orbit.constellations import generate
from groundplane.orbit.elements import ElementSet
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.passes import Pass
from groundplane.routing.app import (
    CatalogSnapshot,
    CatalogSource,
    RoutingApp,
    StaticCatalog,
    StaticView,
)
from groundplane.routing.servicer import SERVICE_NAME
from groundplane.routing.table import RouteTable
from groundplane.scenario import DEFAULT_CONSTELLATION, default_stations

T0 = datetime(2026, 8, 15, 12, tzinfo=UTC)
ELEMENTS = generate(DEFAULT_CONSTELLATION, T0)
STATIONS = default_stations()
MODEL = "synth-7b"
TIMEOUT_S = 30.0
HOUR_S = 3600.0


def batch_of(elements: Sequence[ElementSet]) -> SatelliteBatch:
    return SatelliteBatch([e.catalog_id for e in elements], [e.to_satrec() for e in elements])


def seen(table: RouteTable) -> set[str]:
    """Satellites on some station's path list of ``table``."""
    return {path.satellite_id for station in table.stations for path in station.paths}


class Predictions:
    """The pass predictions the app hands out, and a way to wait for the n-th."""

    def __init__(self) -> None:
        self.items: list[Sequence[Pass]] = []
        self._changed = asyncio.Event()

    def __call__(self, passes: Sequence[Pass]) -> None:
        self.items.append(passes)
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        while True:
            self._changed.clear()
            if len(self.items) >= count:
                return
            await self._changed.wait()


class FakeFollower:
    """A catalog follower without a catalog until :meth:`publish` (tracking not yet heard)."""

    def __init__(self) -> None:
        self._view: StaticView | None = None
        self._listeners: list[Callable[[CatalogSnapshot], None]] = []

    def current(self) -> StaticView | None:
        return self._view

    def add_listener(self, callback: Callable[[CatalogSnapshot], None]) -> None:
        self._listeners.append(callback)

    def publish(self, view: StaticView) -> None:
        self._view = view
        for callback in self._listeners:
            callback(view)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    async with PrivateBroker(workdir=tmp_path / "broker") as running:
        yield running


@asynccontextmanager
async def running_app(
    broker: PrivateBroker,
    catalog: CatalogSource,
    *,
    on_passes: Callable[[Sequence[Pass]], None] | None = None,
) -> AsyncIterator[tuple[RoutingApp, MqttClient]]:
    """The app on its own service client, plus a second client to publish node births with.
    The table tick is an hour of simulated time at real speed: no tick comes during a test."""
    clock = SimulatedClock(T0)
    async with AsyncExitStack() as stack:
        routing_client = await stack.enter_async_context(
            MqttClient(broker.address, client_id="test-routing", clock=clock)
        )
        publisher = await stack.enter_async_context(
            MqttClient(broker.address, client_id="test-nodes", clock=clock)
        )
        await routing_client.wait_connected(TIMEOUT_S)
        await publisher.wait_connected(TIMEOUT_S)
        app = await stack.enter_async_context(
            RoutingApp(
                catalog,
                routing_client,
                clock,
                tick_s=HOUR_S,
                pass_horizon_s=HOUR_S,
                drain_grace_s=0.2,
                unready_delay_s=0.0,
                on_passes=on_passes,
            )
        )
        yield app, publisher


async def birth(publisher: MqttClient, satellite_id: str) -> None:
    status = node_pb2.NodeStatus(
        satellite_id=satellite_id,
        epoch=1,
        state=node_pb2.NODE_STATE_ONLINE,
        served_models=[MODEL],
        slots=4,
    )
    await publisher.publish(
        topics.node_status(satellite_id), status.SerializeToString(), retain=True
    )


async def readiness(
    target: str,
) -> dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {
            name: (
                await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT_S)
            ).status
            for name in ("", READINESS, SERVICE_NAME)
        }


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_not_ready_without_a_catalog_view_then_ready_once_it_arrives(
    broker: PrivateBroker,
) -> None:
    """A node heard but no catalog view: readiness, '' and the routing service are NOT_SERVING
    and the table has no station; once the follower delivers a view the app becomes SERVING and
    its table carries the catalog's stations and the satellites they see."""
    follower = FakeFollower()
    async with running_app(broker, follower) as (app, publisher):
        await birth(publisher, ELEMENTS[0].catalog_id)
        await app.directory.wait_for(ELEMENTS[0].catalog_id, lambda _view: True, TIMEOUT_S)
        assert set((await readiness(app.target)).values()) == {NOT_SERVING}
        assert not app.ready

        follower.publish(StaticView(7, tuple(STATIONS), batch_of(ELEMENTS)))
        await app.wait_ready(TIMEOUT_S)
        assert set((await readiness(app.target)).values()) == {SERVING}
        table = app.table
        assert table is not None
        assert [s.station.station_id for s in table.stations] == [s.id for s in STATIONS]
        assert seen(table), "the default stations see some of the 96 satellites"
        assert app.catalog_version == 7
        assert app.metrics.value("groundplane_routing_catalog_views_total") == 1


async def test_a_table_from_the_catalog_is_not_enough_readiness_waits_for_a_node(
    broker: PrivateBroker,
) -> None:
    """With a catalog the first table is built, yet readiness stays NOT_SERVING until the node
    directory has heard a node; then SERVING."""
    async with running_app(broker, StaticCatalog(batch_of(ELEMENTS), STATIONS)) as (app, publisher):
        table = await app.wait_table(TIMEOUT_S)
        assert seen(table)
        assert set((await readiness(app.target)).values()) == {NOT_SERVING}
        await birth(publisher, sorted(seen(table))[0])
        await app.wait_ready(TIMEOUT_S)
        assert set((await readiness(app.target)).values()) == {SERVING}


async def test_a_catalog_change_rebuilds_visibility_and_passes_without_waiting_for_a_tick(
    broker: PrivateBroker,
) -> None:
    """A new view without the satellites the stations saw: within seconds (the table tick is an
    hour) a table is published in which none of them appears, and the passes are predicted again
    without them; the metrics follow the catalog and table versions."""
    catalog = StaticCatalog(batch_of(ELEMENTS), STATIONS)
    predictions = Predictions()
    async with running_app(broker, catalog, on_passes=predictions) as (app, _publisher):
        first = await app.wait_table(TIMEOUT_S)
        gone = seen(first)
        assert gone
        assert len(predictions.items) == 1
        assert predictions.items[0], "an hour of passes over the default stations"

        catalog.replace(batch_of([e for e in ELEMENTS if e.catalog_id not in gone]), STATIONS)
        async with asyncio.timeout(TIMEOUT_S):
            async for table in app.service.watch():
                if table.version > first.version and not seen(table) & gone:
                    break
            await predictions.wait_for(2)
        assert predictions.items[1]
        assert not gone & {p.catalog_id for p in predictions.items[1]}
        assert app.catalog_version == 2
        assert app.metrics.value("groundplane_routing_catalog_views_total") == 2
