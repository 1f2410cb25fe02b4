"""TrackingService over real gRPC: ListEclipses and the sunlit fraction in look angles,
visibility and the look-angle stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.timestamps import from_timestamp, to_timestamp
from groundplane.orbit.eclipses import find_eclipses
from groundplane.orbit.elements import parse_elements
from groundplane.orbit.geometry import (
    SatelliteBatch,
    earth_rotation,
    ecef_to_geodetic,
    propagate,
    teme_to_itrf,
    utc_jd_fr,
)
from groundplane.tracking.app import build_tracking
from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

from ..data import DATA

NOW = datetime(2026, 8, 16, 0, 0, tzinfo=UTC)
#: The ISS, a geostationary satellite and high-beta LEO satellites (28054 and 46495 graze the
#: shadow: penumbra-only passages on the day).
SATELLITES = ("25544", "41105", "28054", "46495")


def _records() -> str:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    picked = [
        "\n".join(lines[i : i + 3])
        for i in range(0, len(lines), 3)
        if lines[i + 1][2:7].strip() in SATELLITES
    ]
    return "\n".join(picked) + "\n"


@pytest.fixture
async def stub() -> AsyncIterator[pb_grpc.TrackingServiceAsyncStub]:
    clock = SimulatedClock(NOW, speed=1.0)
    app = build_tracking(clock, db_path=":memory:", unready_delay_s=0.0, drain_grace_s=0.1)
    await app.server.start()
    channel = grpc.aio.insecure_channel(app.server.target)
    try:
        client = pb_grpc.TrackingServiceStub(channel)
        await client.UpsertElements(pb.UpsertElementsRequest(text=_records()), timeout=10)
        yield client
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()


async def _eclipses(
    stub: pb_grpc.TrackingServiceAsyncStub, start: datetime, end: datetime
) -> pb.ListEclipsesResponse:
    reply: pb.ListEclipsesResponse = await stub.ListEclipses(
        pb.ListEclipsesRequest(start=to_timestamp(start), end=to_timestamp(end)), timeout=10
    )
    return reply


async def test_list_eclipses_matches_the_library(stub: pb_grpc.TrackingServiceAsyncStub) -> None:
    """ListEclipses gives the library's eclipses of every active satellite (to the µs), sorted
    by penumbra entry, named, with unset umbra times exactly for penumbra-only passages."""
    end = NOW + timedelta(hours=12)
    reply = await _eclipses(stub, NOW, end)
    sets = {e.catalog_id: e for e in parse_elements(_records())}
    batch = SatelliteBatch(list(sets), [e.to_satrec() for e in sets.values()])
    expected = sorted(
        find_eclipses(batch, NOW, end), key=lambda e: (e.penumbra_entry, e.catalog_id)
    )
    assert len(reply.eclipses) == len(expected) > 10
    for got, want in zip(reply.eclipses, expected, strict=True):
        assert got.catalog_id == want.catalog_id
        assert got.name == sets[want.catalog_id].name
        delta = from_timestamp(got.penumbra_entry) - want.penumbra_entry
        assert abs(delta.total_seconds()) < 1e-5
        assert got.HasField("umbra_entry") == (want.umbra_entry is not None)
        assert got.HasField("umbra_exit") == (want.umbra_exit is not None)
        assert got.duration_s == pytest.approx(want.duration_s, abs=1e-5)
        assert (got.entry_clipped, got.exit_clipped) == (want.entry_clipped, want.exit_clipped)
    assert any(not e.HasField("umbra_entry") for e in reply.eclipses)
    assert {e.catalog_id for e in reply.eclipses} >= {"25544", "41105"}


async def test_list_eclipses_refuses_a_backwards_window(
    stub: pb_grpc.TrackingServiceAsyncStub,
) -> None:
    """A window ending before it starts is INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await _eclipses(stub, NOW + timedelta(hours=2), NOW)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sunlit_fraction_in_look_angles_visibility_and_the_stream(
    stub: pb_grpc.TrackingServiceAsyncStub,
) -> None:
    """In the middle of an ISS umbra ListEclipses reports, GetLookAngles says sunlit_fraction 0;
    midway between two eclipses 1; GetVisibility reports the same value as the look angles for
    the same instant; WatchLookAngles carries it too."""
    reply = await _eclipses(stub, NOW, NOW + timedelta(hours=4))
    iss = [e for e in reply.eclipses if e.catalog_id == "25544" and not e.entry_clipped]
    first, second = iss[0], iss[1]
    u_in, u_out = from_timestamp(first.umbra_entry), from_timestamp(first.umbra_exit)
    dark = u_in + (u_out - u_in) / 2
    p_out, p_in = from_timestamp(first.penumbra_exit), from_timestamp(second.penumbra_entry)
    light = p_out + (p_in - p_out) / 2
    site = pb.Site(id="eq", lat_deg=0.0, lon_deg=0.0, min_elevation_deg=-90.0)
    angles = await stub.GetLookAngles(
        pb.GetLookAnglesRequest(
            catalog_ids=["25544"],
            sites=pb.SiteSelector(sites=[site]),
            times=[to_timestamp(dark), to_timestamp(light)],
        ),
        timeout=10,
    )
    assert [a.HasField("sunlit_fraction") for a in angles.look_angles] == [True, True]
    assert [a.sunlit_fraction for a in angles.look_angles] == [0.0, 1.0]
    # A site under the ISS at that instant sees it.
    sets = {e.catalog_id: e for e in parse_elements(_records())}
    jd, fr = utc_jd_fr(dark)
    r = propagate(SatelliteBatch(["25544"], [sets["25544"].to_satrec()]), jd, fr).r_teme_km
    r_itrf, _ = teme_to_itrf(np.moveaxis(r, -1, 0), np.zeros((3, 1, 1)), earth_rotation(jd, fr))
    lat, lon, _ = ecef_to_geodetic(np.moveaxis(r_itrf, 0, -1))
    under = pb.Site(id="under", lat_deg=float(lat.ravel()[0]), lon_deg=float(lon.ravel()[0]))
    seen = await stub.GetVisibility(
        pb.GetVisibilityRequest(sites=pb.SiteSelector(sites=[under]), time=to_timestamp(dark)),
        timeout=10,
    )
    by_id = {s.catalog_id: s for s in seen.sites[0].satellites}
    assert by_id["25544"].HasField("sunlit_fraction")
    assert by_id["25544"].sunlit_fraction == 0.0
    everyone = await stub.GetLookAngles(
        pb.GetLookAnglesRequest(sites=pb.SiteSelector(sites=[under]), times=[to_timestamp(dark)]),
        timeout=10,
    )
    for angle in everyone.look_angles:
        if angle.catalog_id in by_id:
            assert by_id[angle.catalog_id].sunlit_fraction == pytest.approx(angle.sunlit_fraction)
    call = stub.WatchLookAngles(
        pb.WatchLookAnglesRequest(catalog_ids=["25544"], sites=pb.SiteSelector(sites=[site])),
        timeout=10,
    )
    async for sample in call:
        assert sample.look_angles[0].HasField("sunlit_fraction")
        assert 0.0 <= sample.look_angles[0].sunlit_fraction <= 1.0
        call.cancel()
        break
