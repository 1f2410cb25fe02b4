"""WatchCatalog over real gRPC and the CatalogFollower that links, routing and handoff use."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import DeadlineExceeded
from groundplane.kernel.timestamps import to_timestamp
from groundplane.mqtt.client import Backoff
from groundplane.orbit.elements import ElementSet, parse_elements
from groundplane.orbit.geometry import SatelliteBatch, propagate, utc_jd_fr
from groundplane.orbit.sites import Site
from groundplane.tracking.app import TrackingApp, build_tracking
from groundplane.tracking.client import (
    CatalogFollower,
    element_set_to_proto,
    site_to_proto,
)
from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

from ..cli.test_serve_tracking import _serve
from ..data import DATA

EPOCH_NOW = datetime(2026, 8, 15, tzinfo=UTC)
TIMEOUT_S = 20.0
FAST_BACKOFF = Backoff(base_s=0.05, factor=1.6, cap_s=0.5, jitter=0.2)
SATELLITES = 5
SITES = (
    Site("svalbard", 78.2298, 15.4078, 500.0, name="SvalSat", min_elevation_deg=5.0),
    Site("fairbanks", 64.8587, -147.8576, 200.0, name="Fairbanks"),
)


def _elements(count: int = SATELLITES) -> list[ElementSet]:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    return parse_elements("\n".join(lines[: 3 * count]) + "\n", "preload")


def _positions_km(batch: SatelliteBatch, at: datetime) -> np.ndarray:
    jd, fr = utc_jd_fr([at])
    return np.asarray(propagate(batch, jd, fr).r_teme_km[:, 0, :])


def _start(
    clock: SimulatedClock, *, address: str = "127.0.0.1:0", db: str = ":memory:"
) -> TrackingApp:
    return build_tracking(
        clock,
        db_path=db,
        address=address,
        elements=_elements(),
        sites=SITES,
        unready_delay_s=0.0,
        drain_grace_s=0.1,
    )


@asynccontextmanager
async def _following(target: str) -> AsyncIterator[CatalogFollower]:
    follower = CatalogFollower(target, timeout_s=5.0, backoff=FAST_BACKOFF)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(follower.run(), name="test-catalog-follower")
        try:
            yield follower
        finally:
            task.cancel()


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(EPOCH_NOW)


@pytest.fixture
async def tracking(clock: SimulatedClock) -> AsyncIterator[TrackingApp]:
    app = _start(clock)
    await app.server.start()
    try:
        yield app
    finally:
        await app.server.stop(0)
        app.close()


@asynccontextmanager
async def _stub(target: str) -> AsyncIterator[pb_grpc.TrackingServiceAsyncStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield pb_grpc.TrackingServiceStub(channel)


def _shifted(elements: ElementSet, mean_anomaly_deg: float) -> ElementSet:
    return dataclasses.replace(
        elements, mean_anomaly_deg=(elements.mean_anomaly_deg + mean_anomaly_deg) % 360.0
    )


async def test_first_view_holds_every_active_element_set_and_site(tracking: TrackingApp) -> None:
    """The follower's first view is the whole catalog: the active set of each satellite in
    catalog-id order, every site with its threshold, and a batch of the same satellites."""
    expected = sorted(_elements(), key=lambda e: int(e.catalog_id))
    async with _following(tracking.server.target) as follower:
        view = await follower.wait_ready(TIMEOUT_S)
    assert [e.catalog_id for e in view.elements] == [e.catalog_id for e in expected]
    assert view.elements == tuple(expected)
    assert list(view.batch.ids) == [e.catalog_id for e in expected]
    assert view.sites == tuple(sorted(SITES, key=lambda s: s.id))
    assert view.version == tracking.servicer.core.version
    assert follower.current() is view


async def test_replaced_deleted_and_added_reach_the_follower(tracking: TrackingApp) -> None:
    """An UpsertElements replacing one satellite's elements gives a new version whose batch puts
    that satellite elsewhere (and no other); DeleteElements removes a satellite; UpsertSite
    adds a site. Each change arrives as a new, larger version."""
    async with (
        _following(tracking.server.target) as follower,
        _stub(tracking.server.target) as stub,
    ):
        first = await follower.wait_ready(TIMEOUT_S)
        target = first.elements[1]
        await stub.UpsertElements(
            pb.UpsertElementsRequest(
                element_sets=[element_set_to_proto(_shifted(target, 90.0))], source="preload"
            ),
            timeout=TIMEOUT_S,
        )
        replaced = await follower.wait_for_version(first.version, TIMEOUT_S)
        moved_km = np.linalg.norm(
            _positions_km(replaced.batch, EPOCH_NOW) - _positions_km(first.batch, EPOCH_NOW),
            axis=1,
        )
        assert [e.catalog_id for e in replaced.elements] == [e.catalog_id for e in first.elements]
        assert moved_km[1] > 1000.0
        assert np.all(np.delete(moved_km, 1) == 0.0)

        gone = first.elements[0].catalog_id
        await stub.DeleteElements(pb.DeleteElementsRequest(catalog_id=gone), timeout=TIMEOUT_S)
        deleted = await follower.wait_for_version(replaced.version, TIMEOUT_S)
        assert gone not in deleted.batch.ids
        assert len(deleted.elements) == SATELLITES - 1

        new_site = Site("hartebeesthoek", -25.89, 27.69, 1415.0, min_elevation_deg=10.0)
        await stub.UpsertSite(pb.UpsertSiteRequest(site=site_to_proto(new_site)), timeout=TIMEOUT_S)
        added = await follower.wait_for_version(deleted.version, TIMEOUT_S)
        assert new_site in added.sites
        assert len(added.sites) == len(SITES) + 1
        assert added.elements == deleted.elements


async def test_follower_survives_a_tracking_restart_on_the_same_port(
    clock: SimulatedClock, tmp_path: Path
) -> None:
    """Tracking stops: the follower keeps its last view and reports the stream down. Tracking
    comes back on the same port from its store: the follower reconnects by itself, the version
    is larger than before the restart, and a change made after it arrives too."""
    db = str(tmp_path / "tracking.sqlite3")
    app = _start(clock, db=db)
    await app.server.start()
    address = app.server.target
    restarted: TrackingApp | None = None
    try:
        async with _following(address) as follower:
            before = await follower.wait_ready(TIMEOUT_S)
            await app.server.stop(0)
            app.close()
            await follower.wait_connected(False, TIMEOUT_S)
            assert follower.current() is before

            restarted = build_tracking(
                clock, db_path=db, address=address, unready_delay_s=0.0, drain_grace_s=0.1
            )
            await restarted.server.start()
            after = await follower.wait_for_version(before.version, TIMEOUT_S)
            assert follower.streams_opened == 2
            assert after.elements == before.elements
            assert after.sites == before.sites

            async with _stub(address) as stub:
                await stub.DeleteElements(
                    pb.DeleteElementsRequest(catalog_id=before.elements[-1].catalog_id),
                    timeout=TIMEOUT_S,
                )
            latest = await follower.wait_for_version(after.version, TIMEOUT_S)
            assert len(latest.elements) == SATELLITES - 1
    finally:
        if restarted is not None:
            await restarted.server.stop(0)
            restarted.close()


async def test_a_burst_within_min_interval_arrives_as_one_latest_state(
    tracking: TrackingApp,
) -> None:
    """A reader asking min_interval_s gets the whole state first; ten upserts made during the
    interval then arrive as ONE response holding the last of them (no backlog of the nine
    states in between)."""
    async with _stub(tracking.server.target) as stub:
        call = stub.WatchCatalog(pb.WatchCatalogRequest(min_interval_s=3.0), timeout=TIMEOUT_S)
        responses = aiter(call)
        first = await anext(responses)
        assert len(first.element_sets) == SATELLITES
        base = _elements()[0]
        for step in range(1, 11):
            await stub.UpsertElements(
                pb.UpsertElementsRequest(
                    element_sets=[element_set_to_proto(_shifted(base, 10.0 * step))],
                    source="preload",
                ),
                timeout=TIMEOUT_S,
            )
        final_version = tracking.servicer.core.version
        second = await anext(responses)
        call.cancel()
    assert second.catalog_version == final_version
    assert second.catalog_version > first.catalog_version
    (changed,) = [m for m in second.element_sets if m.catalog_id == base.catalog_id]
    assert changed.mean_anomaly_deg == pytest.approx((base.mean_anomaly_deg + 100.0) % 360.0)


async def test_an_expiring_record_changes_the_view_without_a_call(
    tracking: TrackingApp, clock: SimulatedClock
) -> None:
    """A higher-priority record with an expiry is active until that instant; when it expires
    the stream sends a new version with the satellite's previous elements active again, with
    no RPC in between."""
    async with (
        _following(tracking.server.target) as follower,
        _stub(tracking.server.target) as stub,
    ):
        first = await follower.wait_ready(TIMEOUT_S)
        original = first.elements[2]
        await stub.UpsertElements(
            pb.UpsertElementsRequest(
                element_sets=[element_set_to_proto(_shifted(original, 45.0))],
                source="operator",
                priority=10,
                expires_at=to_timestamp(clock.now() + timedelta(seconds=1.0)),
            ),
            timeout=TIMEOUT_S,
        )
        overridden = await follower.wait_for_version(first.version, TIMEOUT_S)
        assert overridden.elements[2] != original
        expired = await follower.wait_for_version(overridden.version, TIMEOUT_S)
        assert expired.elements[2] == original
        assert clock.now() >= EPOCH_NOW + timedelta(seconds=1.0)


async def test_wait_for_version_names_what_it_waited_for(tracking: TrackingApp) -> None:
    """With no change coming, wait_for_version raises DEADLINE_EXCEEDED naming the version."""
    async with _following(tracking.server.target) as follower:
        view = await follower.wait_ready(TIMEOUT_S)
        with pytest.raises(DeadlineExceeded, match=f"above version {view.version}"):
            await follower.wait_for_version(view.version, 0.2)


async def test_min_interval_out_of_range_is_invalid_argument(tracking: TrackingApp) -> None:
    """A negative (or over an hour) min_interval_s is refused with INVALID_ARGUMENT."""
    async with _stub(tracking.server.target) as stub:
        call = stub.WatchCatalog(pb.WatchCatalogRequest(min_interval_s=-1.0), timeout=TIMEOUT_S)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anext(aiter(call))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return str(response.read().decode())


async def test_serve_tracking_process_is_serving_and_streams_its_catalog(tmp_path: Path) -> None:
    """``groundplane serve tracking --port 0 --metrics-port 0`` as a process: readiness is
    SERVING (tracking's inputs are its own), WatchCatalog sends the 636 loaded element sets and
    the stations, and /metrics counts the satellites and the open catalog stream."""
    async with _serve(tmp_path, "--db", ":memory:", "--metrics-port", "0") as served:
        (metrics_line,) = [line for line in served.lines if line.startswith("tracking metrics on")]
        metrics_url = metrics_line.rsplit(" ", 1)[1]
        async with grpc.aio.insecure_channel(served.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(
                health_pb2.HealthCheckRequest(service="readiness"), timeout=TIMEOUT_S
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            stub: pb_grpc.TrackingServiceAsyncStub = pb_grpc.TrackingServiceStub(channel)
            call = stub.WatchCatalog(pb.WatchCatalogRequest(), timeout=60.0)
            first = await anext(aiter(call))
            assert len(first.element_sets) == 636
            assert "Svalbard SvalSat" in {site.name for site in first.sites}
            text = await asyncio.to_thread(_scrape, metrics_url)
            call.cancel()
        assert "groundplane_tracking_catalog_satellites 636.0" in text
        assert "groundplane_tracking_catalog_watchers 1.0" in text
