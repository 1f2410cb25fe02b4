"""The dashboard's pure parts: the chart's window, the satellites' map positions, the coastline
conversion, and the gateway's served-call feed that the request feed reads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from groundplane.dashboard.coastlines import coastline_lines, decode_arcs
from groundplane.dashboard.state import NodeHealth, RequestWindow, node_counts, satellite_points
from groundplane.gateway.feed import ServedFeed, ServedRequest
from groundplane.orbit.constellations import generate
from groundplane.orbit.geometry import SatelliteBatch, utc_jd_fr
from groundplane.plots.groundtrack import subsatellite_points

EPOCH = datetime(2026, 8, 15, 12, tzinfo=UTC)


def test_the_chart_counts_calls_per_second_with_latency_percentiles_of_answered_ones() -> None:
    """Calls land in their wall second; rate counts failures too, percentiles only answered
    calls; seconds without calls have no latency; a call older than the window is dropped."""
    window = RequestWindow(window_s=10)
    base = 1_000_000.0
    for latency_ms in (10, 20, 30, 40, 1000):
        window.add(base + 0.5, latency_ms / 1e3, ok=True)
    window.add(base + 0.9, 5.0, ok=False)
    window.add(base + 3.2, 0.050, ok=True)
    chart = window.chart(base + 3.7)
    assert len(chart) == 10
    assert [p["t"] for p in chart] == list(range(-9, 1))
    first, last = chart[-4], chart[-1]
    assert first["rate"] == 6
    assert first["failed"] == 1
    assert first["p50_ms"] == 30.0
    assert first["p95_ms"] == pytest.approx(float(np.percentile([10, 20, 30, 40, 1000], 95)))
    assert last == {"t": 0, "rate": 1, "failed": 0, "p50_ms": 50.0, "p95_ms": 50.0}
    assert chart[-2]["p50_ms"] is None
    assert (window.total, window.failed_total) == (7, 1)
    later = window.chart(base + 12.0)
    assert sum(p["rate"] for p in later) == 1  # only the call at base + 3.2 is still in view
    window.add(base - 50.0, 0.01, ok=True)  # late and older than the window: not counted
    assert sum(p["rate"] for p in window.chart(base + 12.0)) == 1


def test_satellites_are_placed_where_the_plots_place_them() -> None:
    """Each satellite's map position is the sub-satellite point the ground-track plot computes
    for the same instant, its latitude within the orbit's inclination."""
    elements = generate("walker:12/3/1@550km:53", EPOCH)
    batch = SatelliteBatch([e.catalog_id for e in elements], [e.to_satrec() for e in elements])
    when = EPOCH + timedelta(minutes=17)
    points = satellite_points(batch, when)
    jd, fr = utc_jd_fr([when])
    expected = subsatellite_points(batch, jd, fr)
    assert [p[0] for p in points] == list(expected.satellite_ids)
    for index, (_sat, lat, lon, alt) in enumerate(points):
        assert lat == pytest.approx(expected.lat_deg[index, 0], abs=1e-3)
        assert lon == pytest.approx(expected.lon_deg[index, 0], abs=1e-3)
        assert 500 < alt < 600
        assert abs(lat) <= 53.2


def test_node_counts_cover_every_state() -> None:
    """Every node is counted once, an unexpected state as unknown."""
    nodes = [
        NodeHealth("a", "online", 0, 0),
        NodeHealth("b", "online", 1, 1),
        NodeHealth("c", "offline", 0, 0),
        NodeHealth("d", "strange", 0, 0),
    ]
    assert node_counts(nodes) == {"online": 2, "draining": 0, "offline": 1, "unknown": 1}


def test_topojson_arcs_are_delta_decoded_and_flattened() -> None:
    """A quantized arc's integer deltas add up and scale to degrees; a repeated point is dropped
    and an arc of a single point is left out."""
    topology = {
        "transform": {"scale": [0.5, 0.25], "translate": [-180, -90]},
        "arcs": [[[0, 0], [2, 4], [0, 0], [1, -2]], [[10, 10]]],
    }
    arcs = decode_arcs(topology)
    assert arcs[0] == [(-180.0, -90.0), (-179.0, -89.0), (-179.0, -89.0), (-178.5, -89.5)]
    assert coastline_lines(arcs) == [[-180.0, -90.0, -179.0, -89.0, -178.5, -89.5]]


def _served(index: int) -> ServedRequest:
    return ServedRequest(
        request_id=f"r{index}",
        tenant_id="t",
        model="m",
        satellite_id="s",
        station_id="g",
        code="OK",
        latency_s=0.01,
        output_tokens=3,
        streamed=False,
        finished_at=EPOCH,
        attempts=1,
    )


async def test_a_slow_watcher_loses_the_oldest_calls_and_is_told_how_many() -> None:
    """Publishing never waits: a watcher whose backlog is full drops its oldest call and its
    missed count says so; a watcher gone is no longer served."""
    feed = ServedFeed(backlog=3)
    watch = feed.watch()
    first = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)  # the watcher is registered once its generator runs
    assert feed.watchers == 1
    for index in range(5):
        feed.publish(_served(index))
    got = [await first] + [await anext(watch) for _ in range(2)]
    assert [(s.request_id, m) for s, m in got] == [("r2", 2), ("r3", 2), ("r4", 2)]
    feed.publish(_served(5))
    served, missed = await anext(watch)
    assert (served.request_id, missed) == ("r5", 2)
    await watch.aclose()
    assert feed.watchers == 0
    assert feed.published_total == 6
