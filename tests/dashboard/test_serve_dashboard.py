"""``groundplane serve dashboard`` as a process of its own, over a ``serve tracking`` process."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from groundplane.kernel.clock import SimulatedClock

from ..data import DATA
from ..processes import readiness, serve, wait_serving
from ..scrape import samples

START = datetime(2026, 8, 15, 12, tzinfo=UTC)
START_TIMEOUT_S = 30.0

pytestmark = pytest.mark.slow


def _get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers.get_content_type(), response.read().decode()


async def test_serve_dashboard_serves_the_page_over_trackings_catalog(tmp_path: Path) -> None:
    """With only --tracking, the process prints the page's URL, turns SERVING on gRPC health
    once tracking's catalog is in, serves the page, its script and the coastlines from the
    package, and answers /api/snapshot with tracking's 12 satellites placed on the map and its
    stations; the inputs not given are reported as not connected; its /metrics counts the
    snapshot it computed. SIGTERM exits 0."""
    clock = SimulatedClock(START)
    common = ["--port", "0", "--clock", str(clock.spec()), "--unready-delay", "0"]
    async with (
        serve(
            "tracking",
            *common,
            "--db",
            ":memory:",
            "--constellation",
            "walker:12/3/1@550km:53",
            "--sites",
            str(DATA / "ground-stations.csv"),
            "--log-format",
            "json",
            stderr_path=tmp_path / "tracking.log",
            start_timeout_s=START_TIMEOUT_S,
        ) as tracking,
        serve(
            "dashboard",
            *common,
            "--tracking",
            tracking.target,
            "--web-port",
            "0",
            "--metrics-port",
            "0",
            "--log-format",
            "json",
            stderr_path=tmp_path / "dashboard.log",
            start_timeout_s=START_TIMEOUT_S,
        ) as dashboard,
    ):
        (url,) = [
            line.split(" ", 2)[2] for line in dashboard.lines if line.startswith("dashboard on")
        ]
        assert url.startswith("http://127.0.0.1:")
        await wait_serving(dashboard.target, START_TIMEOUT_S)
        assert await readiness(dashboard.target, 5.0) == 1  # SERVING

        kind, page = await asyncio.to_thread(_get, url)
        assert kind == "text/html"
        assert 'id="satellite-count"' in page
        assert "/static/dashboard.js" in page
        kind, script = await asyncio.to_thread(_get, url + "static/dashboard.js")
        assert kind in ("text/javascript", "application/javascript")
        assert "EventSource" in script
        _, coast = await asyncio.to_thread(_get, url + "static/coastlines.json")
        assert len(json.loads(coast)["lines"]) > 100

        _, body = await asyncio.to_thread(_get, url + "api/snapshot")
        snapshot: dict[str, Any] = json.loads(body)
        assert snapshot["satellite_count"] == 12
        assert len(snapshot["satellites"]) == 12
        assert all(-54 <= lat <= 54 for _id, lat, _lon, _alt in snapshot["satellites"])
        stations = {s["id"]: (s["lat"], s["lon"]) for s in snapshot["stations"]}
        assert stations["0"] == (78.2298, 15.4078)  # the sites file's first station
        assert all(s["routes_to"] is None for s in snapshot["stations"])  # no routing given
        assert snapshot["sources"] == {
            "tracking": True,
            "routing": False,
            "handoff": False,
            "gateway": False,
            "broker": False,
        }
        (metrics_url,) = [
            line.split()[-1] for line in dashboard.lines if line.startswith("dashboard metrics")
        ]
        scraped = await samples(metrics_url)
        assert scraped[("groundplane_dashboard_snapshots_total", frozenset())] >= 1
        assert scraped[("groundplane_dashboard_event_streams", frozenset())] == 0
        assert (
            scraped[("groundplane_dashboard_feed_events_total", frozenset({("feed", "request")}))]
            == 0
        )
        await dashboard.stop(15.0)
        await tracking.stop(15.0)
