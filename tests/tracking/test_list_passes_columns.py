"""ListPasses built from the pass table's columns in bulk: the same messages as one per Pass.

A real tracking server is asked over gRPC; the reference converts every
:class:`~groundplane.orbit.passes.Pass` of ``find_passes`` on its own (datetimes to Timestamps
one by one), as the servicer did before.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.timestamps import to_timestamp
from groundplane.orbit.elements import parse_elements
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.passes import Pass, find_passes
from groundplane.orbit.sites import Site
from groundplane.tracking.app import build_tracking
from groundplane.tracking.v1 import tracking_pb2 as pb
from groundplane.tracking.v1 import tracking_pb2_grpc as pb_grpc

from ..data import DATA

START = datetime(2026, 8, 15, 3, 17, 29, 500_000, tzinfo=UTC)
END = START + timedelta(hours=20)
SATELLITES = 200  # more than one search call of the servicer (128 satellites each)
SITES = [
    Site("north", 60.2, 24.9, 30.0, min_elevation_deg=5.0),
    Site("south", -33.9, 18.4, 0.0, min_elevation_deg=0.0),
]


def _reference(found: Pass, name: str) -> pb.Pass:
    return pb.Pass(
        catalog_id=found.catalog_id,
        name=name,
        site_id=found.site_id,
        aos=to_timestamp(found.aos),
        tca=to_timestamp(found.tca),
        los=to_timestamp(found.los),
        max_elevation_deg=found.max_elevation_deg,
        aos_azimuth_deg=found.aos_azimuth_deg,
        los_azimuth_deg=found.los_azimuth_deg,
        aos_clipped=found.aos_clipped,
        los_clipped=found.los_clipped,
    )


async def test_list_passes_sends_what_the_per_pass_conversion_sent() -> None:
    """200 satellites × 2 sites over 20 h (the window cutting passes at both ends): the stream
    holds exactly the messages converted one Pass at a time, in the same order, batched at
    the service's stream batch size."""
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    text = "\n".join(lines[: 3 * SATELLITES]) + "\n"
    # Only elements fresh for the whole window (a stale one named in a request is refused).
    elements = [e for e in parse_elements(text) if abs(e.epoch - START) < timedelta(days=10)]
    app = build_tracking(
        SimulatedClock(START, speed=1.0), db_path=":memory:", unready_delay_s=0.0, drain_grace_s=0.1
    )
    await app.server.start()
    channel = grpc.aio.insecure_channel(app.server.target)
    try:
        stub = pb_grpc.TrackingServiceStub(channel)
        await stub.UpsertElements(pb.UpsertElementsRequest(text=text), timeout=10)
        request = pb.ListPassesRequest(
            catalog_ids=[e.catalog_id for e in elements],
            sites=pb.SiteSelector(
                sites=[
                    pb.Site(
                        id=s.id,
                        lat_deg=s.lat_deg,
                        lon_deg=s.lon_deg,
                        alt_m=s.alt_m,
                        min_elevation_deg=s.min_elevation_deg,
                    )
                    for s in SITES
                ]
            ),
            start=to_timestamp(START),
            end=to_timestamp(END),
        )
        chunks = [chunk async for chunk in stub.ListPasses(request, timeout=60)]
    finally:
        await channel.close(None)
        await app.server.stop(0)
        app.close()
    got = [p for chunk in chunks for p in chunk.passes]
    names = {e.catalog_id: e.name for e in elements}
    expected: list[pb.Pass] = []
    for first in range(0, len(elements), 128):
        part = elements[first : first + 128]
        batch = SatelliteBatch([e.catalog_id for e in part], [e.to_satrec() for e in part])
        expected.extend(
            _reference(p, names[p.catalog_id]) for p in find_passes(batch, SITES, START, END)
        )
    assert len(expected) > 1000
    assert any(p.aos_clipped for p in expected)
    assert any(p.los_clipped for p in expected)
    assert [p.SerializeToString() for p in got] == [p.SerializeToString() for p in expected]
    batch_size = app.servicer.core.settings.pass_stream_batch
    assert all(0 < len(chunk.passes) <= batch_size for chunk in chunks if not chunk.warnings)
