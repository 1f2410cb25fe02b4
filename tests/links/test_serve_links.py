"""``groundplane serve links`` as a process, talked to only through gRPC health, tracking's API
and MQTT: it waits for tracking, follows its catalog, and moves the links when an element set is
replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import urllib.request
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.cli.inputs import load_sites_csv
from groundplane.kernel.clock import SimulatedClock
from groundplane.link.v1 import link_pb2
from groundplane.links.geometry import TrackedGroundGeometry
from groundplane.mqtt import topics
from groundplane.mqtt.broker import PrivateBroker
from groundplane.mqtt.client import MqttClient, ReceivedMessage
from groundplane.orbit.elements import ElementSet, parse_elements
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.sites import HorizonMask, Site
from groundplane.tracking.app import TrackingApp, build_tracking
from groundplane.tracking.client import element_set_to_proto
from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

from ..data import DATA
from ..processes import Served, serve

START = datetime(2026, 8, 15, 6, 0, tzinfo=UTC)
#: Generous: a cold start imports numpy, grpc and sgp4 on a shared 2-core machine.
START_TIMEOUT_S = 120.0
TIMEOUT_S = 30.0
LINK_TICK_S = 0.5
#: The satellite chosen must stay in view (and its replacement out of view) this long.
HOLD_S = 120.0

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None,
    reason="mosquitto is not installed",
)


def _batch(elements: list[ElementSet]) -> SatelliteBatch:
    return SatelliteBatch([e.catalog_id for e in elements], [e.to_satrec() for e in elements])


def _in_view(elements: list[ElementSet], sites: list[Site], at: datetime) -> set[tuple[str, str]]:
    return set(TrackedGroundGeometry(_batch(elements), sites)(at))


def _choose(elements: list[ElementSet], sites: list[Site]) -> tuple[str, ElementSet, ElementSet]:
    """A (station, satellite) pair in view from START to START + HOLD_S, and elements for that
    satellite that keep it out of that station's view over the same span."""
    instants = [START + timedelta(seconds=s) for s in range(0, int(HOLD_S) + 1, 10)]
    steady = set.intersection(*(_in_view(elements, sites, t) for t in instants))
    by_id = {e.catalog_id: e for e in elements}
    for station, sat in sorted(steady):
        for shift_deg in (180.0, 150.0, 210.0, 120.0, 240.0):
            original = by_id[sat]
            moved = dataclasses.replace(
                original, mean_anomaly_deg=(original.mean_anomaly_deg + shift_deg) % 360.0
            )
            if all((station, sat) not in _in_view([moved], sites, t) for t in instants):
                return station, original, moved
    raise AssertionError("no satellite stays in view of a station for the test's span")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve_links(
    tmp_path: Path, tracking: str, broker: PrivateBroker, clock: SimulatedClock
) -> AbstractAsyncContextManager[Served]:
    return serve(
        "links",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--tracking",
        tracking,
        "--broker",
        broker.address.url,
        "--clock",
        str(clock.spec()),
        "--link-tick",
        str(LINK_TICK_S),
        "--unready-delay",
        "0",
        "--drain-grace",
        "1",
        "--log-format",
        "json",
        stderr_path=tmp_path / "links-stderr.log",
        start_timeout_s=START_TIMEOUT_S,
    )


async def _next_status(call: Any) -> int:
    """The next status a health Watch stream sends (its end fails the test)."""
    async with asyncio.timeout(START_TIMEOUT_S):
        reply = await call.read()  # grpc.aio.EOF when the stream ended
    assert isinstance(reply, health_pb2.HealthCheckResponse), "the readiness Watch ended early"
    return int(reply.status)


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return str(response.read().decode())


async def test_serve_links_follows_tracking_and_drops_a_replaced_satellite(
    tmp_path: Path,
) -> None:
    """``serve links`` started before tracking is NOT_SERVING; once tracking serves the catalog
    it turns SERVING and publishes a retained up state for a satellite in view; replacing that
    satellite's elements through tracking (now out of view) takes its link down within a few
    ticks; SIGTERM ends the process with status 0."""
    elements = parse_elements((DATA / "satellites-2026-08.3le").read_text(), "preload")
    sites = load_sites_csv(str(DATA / "ground-stations.csv"), 0.0, HorizonMask())
    station, original, moved = _choose(elements, sites)
    sat = original.catalog_id
    clock = SimulatedClock(START)
    tracking_port = _free_port()
    tracking_target = f"127.0.0.1:{tracking_port}"
    states: asyncio.Queue[link_pb2.LinkState] = asyncio.Queue()

    async def on_state(message: ReceivedMessage) -> None:
        state = link_pb2.LinkState()
        state.ParseFromString(message.payload)
        await states.put(state)

    async def next_state(up: bool, within_s: float) -> link_pb2.LinkState:
        async with asyncio.timeout(within_s):
            while (state := await states.get()).up is not up:
                pass
        return state

    tracking: TrackingApp | None = None
    async with (
        PrivateBroker(workdir=tmp_path / "broker") as broker,
        _serve_links(tmp_path, tracking_target, broker, clock) as served,
    ):
        (metrics_line,) = [line for line in served.lines if line.startswith("links metrics on")]
        health_target = served.target
        try:
            async with grpc.aio.insecure_channel(health_target) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                watch = health.Watch(
                    health_pb2.HealthCheckRequest(service="readiness"),
                    timeout=START_TIMEOUT_S,
                )
                not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
                assert await _next_status(watch) == not_serving

                tracking = build_tracking(
                    clock,
                    address=tracking_target,
                    elements=elements,
                    sites=sites,
                    unready_delay_s=0.0,
                    drain_grace_s=0.1,
                )
                await tracking.server.start()
                serving = health_pb2.HealthCheckResponse.SERVING
                assert await _next_status(watch) == serving
                watch.cancel()

            async with MqttClient(
                broker.address, client_id="test-link-reader", clock=clock
            ) as reader:
                await reader.wait_connected(TIMEOUT_S)
                await reader.subscribe(topics.link_state(station, sat), on_state)
                up = await next_state(True, TIMEOUT_S)
                assert up.station_id == station
                assert up.satellite_id == sat
                metrics = await asyncio.to_thread(_scrape, metrics_line.rsplit(" ", 1)[1])
                assert "groundplane_links_catalog_satellites 636.0" in metrics

                async with grpc.aio.insecure_channel(tracking_target) as channel:
                    stub: pb_grpc.TrackingServiceAsyncStub = pb_grpc.TrackingServiceStub(channel)
                    await stub.UpsertElements(
                        pb.UpsertElementsRequest(
                            element_sets=[element_set_to_proto(moved)], source="preload"
                        ),
                        timeout=TIMEOUT_S,
                    )
                # A few ticks: the follower's new view, then the next geometry sample.
                down = await next_state(False, 10 * LINK_TICK_S + 5.0)
                assert down.link_id == f"{station}/{sat}"

            await served.stop(START_TIMEOUT_S)
        finally:
            if tracking is not None:
                await tracking.server.stop(0)
                tracking.close()
