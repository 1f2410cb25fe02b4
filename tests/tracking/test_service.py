"""TrackingService over real gRPC on loopback: contract, errors, persistence, streams."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.timestamps import from_timestamp, to_timestamp
from groundplane.orbit.elements import parse_elements
from groundplane.tracking.app import TrackingApp, build_tracking
from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

from ..data import DATA

EPOCH_NOW = datetime(2026, 8, 15, 0, 0, tzinfo=UTC)
ONE_SECOND = 1.0
ISS = "25544"


def _first_records(count: int) -> str:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    return "\n".join(lines[: 3 * count]) + "\n"


def _iss_record() -> str:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    for index in range(0, len(lines), 3):
        if lines[index + 1][2:7].strip() == ISS:
            return "\n".join(lines[index : index + 3]) + "\n"
    raise AssertionError("ISS not in data/satellites-2026-08.3le")


class Running:
    """A started tracking app and a stub connected to it."""

    def __init__(self, app: TrackingApp, stub: pb_grpc.TrackingServiceAsyncStub) -> None:
        self.app = app
        self.stub = stub


async def _start(
    clock: SimulatedClock, db: str = ":memory:"
) -> tuple[TrackingApp, grpc.aio.Channel]:
    app = build_tracking(clock, db_path=db, unready_delay_s=0.0, drain_grace_s=0.1)
    await app.server.start()
    return app, grpc.aio.insecure_channel(app.server.target)


@pytest.fixture
async def service() -> AsyncIterator[Running]:
    clock = SimulatedClock(EPOCH_NOW, speed=1.0)
    app, channel = await _start(clock)
    try:
        yield Running(app, pb_grpc.TrackingServiceStub(channel))
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()


async def _load(stub: pb_grpc.TrackingServiceAsyncStub, text: str) -> pb.UpsertElementsResponse:
    response: pb.UpsertElementsResponse = await stub.UpsertElements(
        pb.UpsertElementsRequest(text=text, source="celestrak"), timeout=10
    )
    return response


async def test_elements_upsert_list_get_export_delete(service: Running) -> None:
    """Ingested elements are listed, the active one is marked, export round-trips through the
    parser, and delete makes the id NOT_FOUND."""
    stub = service.stub
    response = await _load(stub, _first_records(5) + _iss_record())
    assert len(response.records) == 6
    assert all(r.active and r.source == "celestrak" for r in response.records)
    listed = await stub.ListElements(pb.ListElementsRequest(), timeout=10)
    assert {r.element_set.catalog_id for r in listed.records} >= {ISS}
    got = await stub.GetElements(pb.GetElementsRequest(catalog_id=ISS), timeout=10)
    assert got.active_record_id == got.records[0].record_id
    assert got.records[0].age == pb.ELEMENT_AGE_OK

    exported = await stub.ExportElements(
        pb.ExportElementsRequest(catalog_ids=[ISS], format=pb.EXPORT_FORMAT_3LE), timeout=10
    )
    (again,) = parse_elements(exported.text)
    (original,) = parse_elements(_iss_record())
    assert again.catalog_id == original.catalog_id
    assert again.epoch == original.epoch
    assert again.mean_motion_rev_per_day == pytest.approx(
        original.mean_motion_rev_per_day, abs=1e-8
    )

    deleted = await stub.DeleteElements(pb.DeleteElementsRequest(catalog_id=ISS), timeout=10)
    assert deleted.deleted_count == 1
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetElements(pb.GetElementsRequest(catalog_id=ISS), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_malformed_elements_are_refused_and_nothing_is_lost(service: Running) -> None:
    """A TLE with a wrong checksum is INVALID_ARGUMENT naming the problem; records stored before
    are untouched and the service keeps answering."""
    stub = service.stub
    await _load(stub, _iss_record())
    good = _first_records(1).splitlines()
    broken_line = good[2][:-1] + str((int(good[2][-1]) + 1) % 10)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await _load(stub, "\n".join([good[0], good[1], broken_line]) + "\n")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "checksum" in (bad.value.details() or "")
    listed = await stub.ListElements(pb.ListElementsRequest(), timeout=10)
    assert [r.element_set.catalog_id for r in listed.records] == [ISS]


@pytest.mark.parametrize(
    ("lat", "lon", "alt", "needle"),
    [
        (math.nan, 0.0, 0.0, "lat_deg"),
        (91.0, 0.0, 0.0, "lat_deg"),
        (0.0, math.inf, 0.0, "lon_deg"),
        (0.0, 0.0, 1e9, "alt_m"),
    ],
)
async def test_bad_site_coordinates_are_invalid_argument(
    service: Running, lat: float, lon: float, alt: float, needle: str
) -> None:
    """NaN, infinite or out-of-range coordinates are refused with a message naming the field."""
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await service.stub.UpsertSite(
            pb.UpsertSiteRequest(site=pb.Site(id="x", lat_deg=lat, lon_deg=lon, alt_m=alt)),
            timeout=10,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (bad.value.details() or "")


async def test_look_angles_visibility_flag_and_doppler(service: Running) -> None:
    """Look angles carry visible = elevation above the site threshold, and Doppler follows
    f·(1 ∓ ṙ/c) for downlink and uplink."""
    stub = service.stub
    await _load(stub, _iss_record())
    site = pb.Site(id="cam", lat_deg=52.2, lon_deg=0.1, alt_m=30, min_elevation_deg=10)
    await stub.UpsertSite(pb.UpsertSiteRequest(site=site), timeout=10)
    times = [to_timestamp(EPOCH_NOW + timedelta(minutes=m)) for m in range(0, 24 * 60, 7)]
    reply = await stub.GetLookAngles(
        pb.GetLookAnglesRequest(
            catalog_ids=[ISS],
            sites=pb.SiteSelector(site_ids=["cam"]),
            times=times,
            frequency_hz=437.8e6,
        ),
        timeout=10,
    )
    assert len(reply.look_angles) == len(times)
    assert any(a.visible for a in reply.look_angles)
    for angle in reply.look_angles:
        assert angle.visible == (angle.elevation_deg > 10.0)
        assert angle.downlink_hz == pytest.approx(
            437.8e6 * (1 - angle.range_rate_km_s / 299792.458)
        )
        assert angle.uplink_hz == pytest.approx(437.8e6 * (1 + angle.range_rate_km_s / 299792.458))


async def _passes(
    stub: pb_grpc.TrackingServiceAsyncStub, request: pb.ListPassesRequest
) -> list[pb.Pass]:
    found: list[pb.Pass] = []
    async for chunk in stub.ListPasses(request, timeout=30):
        found.extend(chunk.passes)
    return found


async def test_pass_window_errors_and_unknown_satellite(service: Running) -> None:
    """start ≥ end and over-long windows are INVALID_ARGUMENT; an unknown id is NOT_FOUND."""
    stub = service.stub
    await _load(stub, _iss_record())
    sites = pb.SiteSelector(sites=[pb.Site(id="eq", lat_deg=0, lon_deg=0)])
    cases = [
        (EPOCH_NOW, EPOCH_NOW, [ISS], grpc.StatusCode.INVALID_ARGUMENT, "start < end"),
        (
            EPOCH_NOW,
            EPOCH_NOW + timedelta(days=30),
            [ISS],
            grpc.StatusCode.INVALID_ARGUMENT,
            "days",
        ),
        (
            EPOCH_NOW,
            EPOCH_NOW + timedelta(hours=1),
            ["99999999"],
            grpc.StatusCode.NOT_FOUND,
            "99999999",
        ),
    ]
    for start, end, ids, code, needle in cases:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await _passes(
                stub,
                pb.ListPassesRequest(
                    catalog_ids=ids, sites=sites, start=to_timestamp(start), end=to_timestamp(end)
                ),
            )
        assert bad.value.code() == code
        assert needle in (bad.value.details() or "")


async def test_stale_elements_refuse_planning() -> None:
    """With the service clock 20 days after the element epoch, planning a named satellite is
    FAILED_PRECONDITION explaining the age; a whole-sky query skips it with a warning."""
    clock = SimulatedClock(EPOCH_NOW + timedelta(days=20), speed=1.0)
    app, channel = await _start(clock)
    try:
        stub = pb_grpc.TrackingServiceStub(channel)
        await _load(stub, _iss_record())
        sites = pb.SiteSelector(sites=[pb.Site(id="eq", lat_deg=0, lon_deg=0)])
        start = clock.now()
        request = pb.ListPassesRequest(
            catalog_ids=[ISS],
            sites=sites,
            start=to_timestamp(start),
            end=to_timestamp(start + timedelta(hours=2)),
        )
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await _passes(stub, request)
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "days old" in (stale.value.details() or "")
        reply = await stub.GetVisibility(pb.GetVisibilityRequest(sites=sites), timeout=10)
        assert not reply.sites[0].satellites
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()


async def test_element_age_is_judged_at_the_instants_asked_for_not_the_service_clock() -> None:
    """With the service clock 100 days after the element epoch, passes and look angles in the
    elements' own week are served; look angles at the service's now are FAILED_PRECONDITION."""
    clock = SimulatedClock(EPOCH_NOW + timedelta(days=100), speed=1.0)
    app, channel = await _start(clock)
    try:
        stub = pb_grpc.TrackingServiceStub(channel)
        await _load(stub, _iss_record())
        sites = pb.SiteSelector(sites=[pb.Site(id="eq", lat_deg=0, lon_deg=0)])
        request = pb.ListPassesRequest(
            catalog_ids=[ISS],
            sites=sites,
            start=to_timestamp(EPOCH_NOW),
            end=to_timestamp(EPOCH_NOW + timedelta(days=1)),
        )
        assert await _passes(stub, request)
        then = pb.GetLookAnglesRequest(
            catalog_ids=[ISS], sites=sites, times=[to_timestamp(EPOCH_NOW + timedelta(hours=1))]
        )
        assert len((await stub.GetLookAngles(then, timeout=10)).look_angles) == 1
        now = pb.GetLookAnglesRequest(
            catalog_ids=[ISS], sites=sites, times=[to_timestamp(clock.now())]
        )
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await stub.GetLookAngles(now, timeout=10)
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--max-element-age-days" in (stale.value.details() or "")
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()


async def test_visibility_agrees_with_passes(service: Running) -> None:
    """Every satellite GetVisibility reports is inside a pass from ListPasses, above the
    threshold, and its LOS matches that pass's LOS within one second."""
    stub = service.stub
    await _load(stub, _first_records(60) + _iss_record())
    site = pb.Site(id="gs", lat_deg=47.0, lon_deg=8.0, alt_m=400, min_elevation_deg=5)
    selector = pb.SiteSelector(sites=[site])
    checked = 0
    for minutes in (0, 37, 91, 203):
        at = EPOCH_NOW + timedelta(minutes=minutes)
        reply = await stub.GetVisibility(
            pb.GetVisibilityRequest(sites=selector, time=to_timestamp(at)), timeout=10
        )
        passes = await _passes(
            stub,
            pb.ListPassesRequest(
                sites=selector, start=to_timestamp(at), end=to_timestamp(at + timedelta(days=1))
            ),
        )
        for seen in reply.sites[0].satellites:
            assert seen.elevation_deg > 5.0
            current = [p for p in passes if p.catalog_id == seen.catalog_id and p.aos_clipped]
            assert len(current) == 1, seen.catalog_id
            if seen.HasField("los"):
                los = from_timestamp(seen.los)
                expected = from_timestamp(current[0].los)
                assert abs((los - expected).total_seconds()) < ONE_SECOND
                checked += 1
    assert checked >= 3


async def test_watch_streams_at_the_requested_simulated_rate() -> None:
    """At speed 200, a watch with interval 10 s delivers samples 10 simulated seconds apart."""
    clock = SimulatedClock(EPOCH_NOW, speed=200.0)
    app, channel = await _start(clock)
    try:
        stub = pb_grpc.TrackingServiceStub(channel)
        await _load(stub, _iss_record())
        call = stub.WatchLookAngles(
            pb.WatchLookAnglesRequest(
                catalog_ids=[ISS],
                sites=pb.SiteSelector(sites=[pb.Site(id="eq", lat_deg=0, lon_deg=0)]),
                interval_s=10.0,
            ),
            timeout=10,
        )
        times = []
        async for sample in call:
            assert len(sample.look_angles) == 1
            times.append(from_timestamp(sample.time))
            if len(times) == 4:
                call.cancel()
                break
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert gaps == pytest.approx([10.0, 10.0, 10.0], abs=1e-6)
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()


async def test_watch_refuses_too_fast_rate(service: Running) -> None:
    """An interval below the minimum is INVALID_ARGUMENT before any sample is sent."""
    await _load(service.stub, _iss_record())
    call = service.stub.WatchLookAngles(
        pb.WatchLookAnglesRequest(
            catalog_ids=[ISS],
            sites=pb.SiteSelector(sites=[pb.Site(id="eq", lat_deg=0, lon_deg=0)]),
            interval_s=0.001,
        ),
        timeout=10,
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        async for _ in call:
            pass
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_catalog_and_sites_survive_a_restart(tmp_path: Path) -> None:
    """Elements and sites written through one service instance are served by the next one
    opened on the same SQLite file."""
    db = str(tmp_path / "tracking.sqlite3")
    clock = SimulatedClock(EPOCH_NOW, speed=1.0)
    app, channel = await _start(clock, db)
    stub = pb_grpc.TrackingServiceStub(channel)
    await _load(stub, _iss_record())
    mask = [
        pb.MaskPoint(azimuth_deg=0, elevation_deg=5),
        pb.MaskPoint(azimuth_deg=180, elevation_deg=20),
    ]
    await stub.UpsertSite(
        pb.UpsertSiteRequest(site=pb.Site(id="roof", lat_deg=1, lon_deg=2, alt_m=3, mask=mask)),
        timeout=10,
    )
    await channel.close(None)
    await app.server.stop(0)
    app.close()

    app, channel = await _start(clock, db)
    try:
        stub = pb_grpc.TrackingServiceStub(channel)
        got = await stub.GetElements(pb.GetElementsRequest(catalog_id=ISS), timeout=10)
        assert got.active_record_id
        sites = (await stub.ListSites(pb.ListSitesRequest(), timeout=10)).sites
        assert [(s.id, s.lat_deg, s.lon_deg, s.alt_m) for s in sites] == [("roof", 1, 2, 3)]
        assert [(p.azimuth_deg, p.elevation_deg) for p in sites[0].mask] == [(0, 5), (180, 20)]
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()


async def test_service_keeps_serving_during_a_large_pass_request(service: Running) -> None:
    """A long pass computation runs off the event loop: a small call answers meanwhile."""
    stub = service.stub
    await _load(stub, _first_records(200))
    sites = pb.SiteSelector(
        sites=[pb.Site(id=str(i), lat_deg=-60 + 10 * i, lon_deg=7 * i) for i in range(12)]
    )
    big = asyncio.ensure_future(
        _passes(
            stub,
            pb.ListPassesRequest(
                sites=sites,
                start=to_timestamp(EPOCH_NOW),
                end=to_timestamp(EPOCH_NOW + timedelta(days=3)),
            ),
        )
    )
    await asyncio.sleep(0.05)
    began = asyncio.get_running_loop().time()
    await stub.ListSites(pb.ListSitesRequest(), timeout=10)
    small_latency = asyncio.get_running_loop().time() - began
    found = await big
    assert found
    assert small_latency < 0.5


async def test_out_of_range_timestamps_are_invalid_argument(service: Running) -> None:
    """A visibility time beyond year 9999 is INVALID_ARGUMENT naming the field, not INTERNAL."""
    beyond = Timestamp(seconds=400_000_000_000)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await service.stub.GetVisibility(
            pb.GetVisibilityRequest(
                sites=pb.SiteSelector(sites=[pb.Site(id="eq", lat_deg=0, lon_deg=0)]),
                time=beyond,
            ),
            timeout=10,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "time" in (bad.value.details() or "")
