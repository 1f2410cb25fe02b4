"""``groundplane serve routing`` as a process, reached only through its contracts.

A private Mosquitto, a tracking service in the test process (its gRPC contract is all routing
sees of it), retained node births and link states published on the broker as node agents and the
link emulator publish them; then ``serve routing`` as a child process: health readiness, Route,
WatchRouteTable, the reaction to an element set replaced through tracking, /metrics, SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.serving import READINESS
from groundplane.link.v1 import link_pb2
from groundplane.mqtt import topics
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import MqttClient
from groundplane.node.v1 import node_pb2
from groundplane.orbit.constellations import generate
from groundplane.orbit.elements import format_omm_json
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.sites import Site
from groundplane.routing.service import TrackingVisibility
from groundplane.routing.v1 import routing_pb2 as pb
from groundplane.routing.v1 import routing_pb2_grpc as pb_grpc
from groundplane.scenario import DEFAULT_CONSTELLATION, DEFAULT_MODEL, default_stations
from groundplane.tracking.app import build_tracking
from groundplane.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from ..processes import Served, serve

pytestmark = pytest.mark.slow

T0 = datetime(2026, 8, 15, 12, tzinfo=UTC)
ELEMENTS = generate(DEFAULT_CONSTELLATION, T0)
MODEL = DEFAULT_MODEL.name
START_TIMEOUT_S = 120.0
"""Generous: a cold start imports numpy, grpc and sgp4 on two shared cores."""
TIMEOUT_S = 30.0
ROUTE_TICK_S = 3600.0
"""Simulated seconds between table resamples: no tick falls within the test, so a table that
changes after the upsert changed because of the catalog, within the current tick."""


def _busiest_station() -> tuple[Site, set[str]]:
    """The default station that sees the most satellites around T0, and those satellites."""
    batch = SatelliteBatch([e.catalog_id for e in ELEMENTS], [e.to_satrec() for e in ELEMENTS])
    best: tuple[Site, set[str]] | None = None
    for station in default_stations():
        ids = {s.satellite_id for s in TrackingVisibility(batch, [station]).sightings(T0)}
        if best is None or len(ids) > len(best[1]):
            best = (station, ids)
    assert best is not None
    assert best[1], "some default station sees a satellite at T0"
    return best


@asynccontextmanager
async def serve_routing(tmp_path: Path, *args: str) -> AsyncIterator[Served]:
    """``serve routing ARGS`` until the block ends; then SIGTERM, which must end it with 0."""
    async with serve(
        "routing",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--unready-delay",
        "0",
        "--drain-grace",
        "1",
        "--log-format",
        "json",
        *args,
        stderr_path=tmp_path / "routing.stderr",
        start_timeout_s=START_TIMEOUT_S,
    ) as served:
        yield served
        await served.stop(TIMEOUT_S)


def _metrics_url(served: Served) -> str:
    """Where the child serves /metrics (its ``routing metrics on URL`` line)."""
    line = next(line for line in served.lines if line.startswith("routing metrics on "))
    return line.rsplit(" ", 1)[1]


async def _publish_nodes_and_links(client: MqttClient, station: Site) -> None:
    """Every satellite born ONLINE serving MODEL, every link of ``station`` up (retained)."""
    for element in ELEMENTS:
        sat = element.catalog_id
        status = node_pb2.NodeStatus(
            satellite_id=sat,
            epoch=1,
            state=node_pb2.NODE_STATE_ONLINE,
            served_models=[MODEL],
            slots=4,
        )
        await client.publish(topics.node_status(sat), status.SerializeToString(), retain=True)
        link = link_pb2.LinkState(
            link_id=f"{station.id}/{sat}",
            station_id=station.id,
            satellite_id=sat,
            up=True,
            delay_s=0.004,
            rate_bps=10e6,
        )
        await client.publish(
            topics.link_state(station.id, sat), link.SerializeToString(), retain=True
        )


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        body: bytes = response.read()
        return body.decode()


def _sample(text: str, name: str = "groundplane_routing_catalog_views_total") -> float:
    (line,) = (line for line in text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])


async def _route(stub: pb_grpc.RoutingServiceAsyncStub, station: Site) -> set[str] | str:
    """The satellites the answer names, first one first; or the status code name."""
    request = pb.RouteRequest(
        model=MODEL,
        user=pb.UserLocation(lat_deg=station.lat_deg, lon_deg=station.lon_deg),
    )
    try:
        response = await stub.Route(request, timeout=TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return {c.satellite_id for c in response.candidates}


async def _first_choice(stub: pb_grpc.RoutingServiceAsyncStub, station: Site) -> str:
    request = pb.RouteRequest(
        model=MODEL,
        user=pb.UserLocation(lat_deg=station.lat_deg, lon_deg=station.lon_deg),
    )
    response = await stub.Route(request, timeout=TIMEOUT_S)
    ranked = sorted((c for c in response.candidates if c.rank > 0), key=lambda c: c.rank)
    assert ranked, f"a routed answer ranks a candidate: {response}"
    return ranked[0].satellite_id


def _table_satellites(table: pb.RouteTable, station: Site) -> set[str]:
    (routes,) = (s for s in table.stations if s.station_id == station.id)
    return {entry.satellite_id for entry in routes.entries}


async def test_serve_routing_becomes_ready_routes_streams_and_follows_an_element_change(
    tmp_path: Path,
) -> None:
    """The process is NOT_SERVING on readiness until a node is heard, then SERVING; Route names
    a satellite the station sees and WatchRouteTable streams tables listing it; when that
    satellite's element set is replaced through tracking's UpsertElements (moved half an orbit
    on), a table without it arrives before any tick and Route no longer offers it; /metrics
    counts the new catalog view applied; SIGTERM exits 0."""
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    station, _seen = _busiest_station()
    clock = SimulatedClock(T0)
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(PrivateBroker(workdir=tmp_path / "broker"))
        tracking = build_tracking(
            clock, elements=ELEMENTS, sites=[station], unready_delay_s=0.0, drain_grace_s=0.2
        )
        stack.callback(tracking.close)
        await tracking.server.start()
        stack.push_async_callback(tracking.server.stop)
        publisher = await stack.enter_async_context(
            MqttClient(broker.address, client_id="test-nodes-and-links", clock=clock)
        )
        await publisher.wait_connected(TIMEOUT_S)

        served = await stack.enter_async_context(
            serve_routing(
                tmp_path,
                "--tracking",
                tracking.server.target,
                "--broker",
                broker.url,
                "--clock",
                str(clock.spec()),
                "--route-tick",
                str(ROUTE_TICK_S),
                "--pass-horizon",
                "1800",
            )
        )
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(served.target))
        health = health_pb2_grpc.HealthStub(channel)
        readiness = health.Watch(health_pb2.HealthCheckRequest(service=READINESS))
        async with asyncio.timeout(TIMEOUT_S):
            first = await anext(aiter(readiness))
        assert first.status == health_pb2.HealthCheckResponse.NOT_SERVING

        await _publish_nodes_and_links(publisher, station)
        async with asyncio.timeout(TIMEOUT_S):
            async for reply in readiness:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
        readiness.cancel()

        stub = pb_grpc.RoutingServiceStub(channel)
        chosen = await _first_choice(stub, station)
        tables = stub.WatchRouteTable(pb.WatchRouteTableRequest())
        async with asyncio.timeout(TIMEOUT_S):
            async for response in tables:
                if chosen in _table_satellites(response.table, station):
                    break
        version_before = response.table.version

        original = next(e for e in ELEMENTS if e.catalog_id == chosen)
        moved = dataclasses.replace(
            original,
            epoch=original.epoch + timedelta(seconds=1),
            mean_anomaly_deg=(original.mean_anomaly_deg + 180.0) % 360.0,
        )
        catalog_before = _sample(await asyncio.to_thread(_scrape, _metrics_url(served)))
        tracking_channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(tracking.server.target)
        )
        tracking_stub = tracking_pb2_grpc.TrackingServiceStub(tracking_channel)
        await tracking_stub.UpsertElements(
            tracking_pb2.UpsertElementsRequest(text=format_omm_json([moved]), source="operator"),
            timeout=TIMEOUT_S,
        )
        async with asyncio.timeout(TIMEOUT_S):
            async for response in tables:
                if chosen not in _table_satellites(response.table, station):
                    break
        tables.cancel()
        assert response.table.version > version_before
        after = await _route(stub, station)
        assert after == "UNAVAILABLE" or chosen not in after, after

        text = await asyncio.to_thread(_scrape, _metrics_url(served))
        assert _sample(text) > catalog_before
        assert 'groundplane_routing_decisions_total{outcome="routed"}' in text
