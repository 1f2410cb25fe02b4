"""Hostile requests to TrackingService over real gRPC: each is refused with a precise status,
quickly, and the service keeps answering (issue 14, found by an adversarial trial)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.timestamps import to_timestamp
from groundplane.orbit.elements import parse_elements
from groundplane.tracking.app import build_tracking
from groundplane.tracking.client import element_set_to_proto
from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

from .test_service import EPOCH_NOW, ISS, _first_records, _iss_record


class Served:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = pb_grpc.TrackingServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    app = build_tracking(
        SimulatedClock(EPOCH_NOW, speed=1.0), db_path=":memory:", unready_delay_s=0.0
    )
    await app.server.start()
    channel = grpc.aio.insecure_channel(
        app.server.target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    try:
        await pb_grpc.TrackingServiceStub(channel).UpsertElements(
            pb.UpsertElementsRequest(text=_iss_record()), timeout=10
        )
        yield Served(channel)
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    return refused.value


async def test_thirty_thousand_inline_sites_are_refused_at_once(served: Served) -> None:
    """30,000 inline sites (all with one id: a duplicate check that is quadratic took 15 s on
    the loop) are INVALID_ARGUMENT naming the limit, within a second."""
    sites = pb.SiteSelector(sites=[pb.Site(id="x", lat_deg=1, lon_deg=2)] * 30_000)
    began = time.monotonic()
    error = await _refused(
        served.stub.GetVisibility(pb.GetVisibilityRequest(sites=sites), timeout=30)
    )
    assert time.monotonic() - began < 1.0
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1000 sites" in (error.details() or "")


async def test_health_answers_while_a_large_valid_request_is_resolved(served: Served) -> None:
    """1,000 inline sites of 190 mask points each (a valid request, ~1 s of validation) are
    validated off the event loop: health checks made meanwhile each answer within 0.3 s."""
    mask = [pb.MaskPoint(azimuth_deg=j * 360 / 190, elevation_deg=5) for j in range(190)]
    sites = pb.SiteSelector(
        sites=[pb.Site(id=f"s{i}", lat_deg=10, lon_deg=20, mask=mask) for i in range(1000)]
    )
    big = asyncio.ensure_future(
        served.stub.GetVisibility(
            pb.GetVisibilityRequest(sites=sites, catalog_ids=[ISS]), timeout=60
        )
    )
    latencies: list[float] = []
    while not big.done():
        began = time.monotonic()
        answer = await served.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        latencies.append(time.monotonic() - began)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    response = await big
    assert len(response.sites) == 1000
    assert latencies
    assert max(latencies) < 0.3, latencies


async def test_an_ancient_epoch_is_refused_and_the_service_still_restarts(tmp_path: Path) -> None:
    """An element set with an epoch in year 999 (stored once as text the store could not parse
    back, so every restart failed) is INVALID_ARGUMENT naming the range; an expiry in year 1 is
    stored and read back by the next instance on the same file."""
    db = str(tmp_path / "tracking.sqlite3")
    clock = SimulatedClock(EPOCH_NOW, speed=1.0)
    for attempt in range(2):
        app = build_tracking(clock, db_path=db, unready_delay_s=0.0)
        await app.server.start()
        channel = grpc.aio.insecure_channel(app.server.target)
        stub = pb_grpc.TrackingServiceStub(channel)
        try:
            if attempt == 0:
                (iss,) = parse_elements(_iss_record())
                ancient = element_set_to_proto(iss)
                ancient.epoch.FromDatetime(datetime(999, 6, 1, tzinfo=UTC))
                error = await _refused(
                    stub.UpsertElements(
                        pb.UpsertElementsRequest(element_sets=[ancient]), timeout=10
                    )
                )
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "1957" in (error.details() or "")
                await stub.UpsertElements(
                    pb.UpsertElementsRequest(
                        text=_iss_record(), expires_at=to_timestamp(datetime(1, 1, 2, tzinfo=UTC))
                    ),
                    timeout=10,
                )
            else:
                got = await stub.GetElements(pb.GetElementsRequest(catalog_id=ISS), timeout=10)
                assert got.records[0].expires_at.ToDatetime().year == 1
        finally:
            await channel.close(None)
            await app.server.stop(0)
            app.close()


async def test_malformed_input_is_invalid_argument_not_internal(served: Served) -> None:
    """Input that used to escape as INTERNAL is INVALID_ARGUMENT naming the problem: a
    100,000-digit catalog id (past int()'s 4,300 digits), a 65-digit one (the 1-64 rule holds
    for numbers too), an OMM NORAD_CAT_ID of 5,000 digits, OMM JSON nested 100,000 deep, and a
    WatchLookAngles interval_s of 1e300."""
    stub = served.stub
    cases: list[tuple[object, str]] = [
        (stub.GetElements(pb.GetElementsRequest(catalog_id="9" * 100_000), timeout=10), "1-64"),
        (stub.GetElements(pb.GetElementsRequest(catalog_id="9" * 65), timeout=10), "1-64"),
        (
            stub.UpsertElements(
                pb.UpsertElementsRequest(text='[{"NORAD_CAT_ID": ' + "9" * 5000 + "}]"), timeout=10
            ),
            "OMM JSON",
        ),
        (
            stub.UpsertElements(
                pb.UpsertElementsRequest(text="[" * 100_000 + "]" * 100_000), timeout=10
            ),
            "nests too deeply",
        ),
    ]
    for call, expected in cases:
        error = await _refused(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert expected in (error.details() or "")
    watch = stub.WatchLookAngles(
        pb.WatchLookAnglesRequest(
            sites=pb.SiteSelector(sites=[pb.Site(id="a", lat_deg=1, lon_deg=2)]), interval_s=1e300
        ),
        timeout=10,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await watch.read()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "interval_s" in (refused.value.details() or "")


async def test_a_full_or_read_only_store_is_unavailable_and_read_only_is_unready(
    tmp_path: Path,
) -> None:
    """A write to a full database is UNAVAILABLE naming the storage (not INTERNAL); a service
    opened on a read-only database answers reads but reports readiness NOT_SERVING."""
    db = tmp_path / "tracking.sqlite3"
    clock = SimulatedClock(EPOCH_NOW, speed=1.0)
    app = build_tracking(clock, db_path=db, unready_delay_s=0.0)
    await app.server.start()
    channel = grpc.aio.insecure_channel(app.server.target)
    try:
        pages = app.store._conn.execute("PRAGMA page_count").fetchone()[0]
        app.store._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
        error = await _refused(
            pb_grpc.TrackingServiceStub(channel).UpsertElements(
                pb.UpsertElementsRequest(text=_first_records(50)), timeout=10
            )
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "storage" in (error.details() or "")
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()

    app = build_tracking(clock, db_path=f"file:{db}?mode=ro", unready_delay_s=0.0)
    await app.server.start()
    channel = grpc.aio.insecure_channel(app.server.target)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        ready = await health.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=10)
        assert ready.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await pb_grpc.TrackingServiceStub(channel).ListSites(pb.ListSitesRequest(), timeout=10)
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()


async def test_oversized_masks_and_site_ids_are_refused(served: Served) -> None:
    """UpsertSite with a 100,000-point mask, a 100 KB id or an id with a NUL is
    INVALID_ARGUMENT naming the limit; none of them is stored."""
    mask = [pb.MaskPoint(azimuth_deg=i * 360 / 100_000, elevation_deg=1) for i in range(100_000)]
    cases = [
        (pb.Site(id="big-mask", lat_deg=1, lon_deg=2, mask=mask), "at most 3600 points"),
        (pb.Site(id="x" * 100_000, lat_deg=1, lon_deg=2), "1-64 printable"),
        (pb.Site(id="a\x00b", lat_deg=1, lon_deg=2), "1-64 printable"),
    ]
    for site, expected in cases:
        error = await _refused(served.stub.UpsertSite(pb.UpsertSiteRequest(site=site), timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in (error.details() or "")
    listed = await served.stub.ListSites(pb.ListSitesRequest(), timeout=10)
    assert list(listed.sites) == []
