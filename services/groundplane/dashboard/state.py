"""What the dashboard page shows, as pure functions of explicit inputs (no clock, no I/O).

:func:`snapshot` turns what the dashboard follows (tracking's catalog view, routing's table, the
link states, the node directory's views, the handoff and request feeds) and one instant into the
JSON document the page draws; :class:`RequestWindow` keeps the finished calls' rate and latency
per wall second for the chart.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from groundplane.kernel.clock import format_utc
from groundplane.kernel.errors import GroundplaneError
from groundplane.orbit.geometry import (
    SatelliteBatch,
    earth_rotation,
    ecef_to_geodetic,
    propagate,
    teme_to_itrf,
    utc_jd_fr,
)
from groundplane.orbit.sites import Site
from groundplane.routing.client import RouteRequest, RouteTable

CHART_WINDOW_S = 60
"""Wall seconds of request rate and latency the chart shows."""
FEED_LENGTH = 40
"""Newest entries of the request and handoff feeds sent to the page."""
NODE_LIST_LENGTH = 200
"""Nodes listed one by one (those not online first); the counts cover all."""


def satellite_points(batch: SatelliteBatch, when: datetime) -> list[list[Any]]:
    """``[id, lat_deg, lon_deg, alt_km]`` of every satellite SGP4 can place at ``when``."""
    if len(batch) == 0:
        return []
    jd, fr = utc_jd_fr([when])
    states = propagate(batch, jd, fr)
    r_itrf, _ = teme_to_itrf(
        np.moveaxis(states.r_teme_km, -1, 0),
        np.moveaxis(states.v_teme_km_s, -1, 0),
        earth_rotation(jd, fr),
    )
    lat, lon, alt = ecef_to_geodetic(np.moveaxis(r_itrf, 0, -1))
    points: list[list[Any]] = []
    for index, sat_id in enumerate(batch.ids):
        la, lo, al = float(lat[index, 0]), float(lon[index, 0]), float(alt[index, 0])
        if math.isfinite(la) and math.isfinite(lo):
            points.append([sat_id, round(la, 3), round(lo, 3), round(al, 1)])
    return points


def station_routes(table: RouteTable | None, model: str, when: datetime) -> dict[str, str]:
    """The satellite a request from each station's own terminal is routed to now (stations
    with no usable satellite are left out)."""
    if table is None or model not in table.known_models:
        return {}
    routes: dict[str, str] = {}
    for station in table.stations:
        station_id = station.station.station_id
        try:
            decision = table.decide(RouteRequest(model=model, terminal_site_id=station_id), when)
        except GroundplaneError:
            continue
        chosen = decision.chosen
        if chosen is not None:
            routes[station_id] = chosen.candidate.satellite_id
    return routes


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """One node as the page shows it."""

    id: str
    """The satellite's id."""
    state: str
    """``online``, ``draining``, ``offline`` or ``unknown``."""
    queue_depth: int
    in_flight: int


def node_counts(nodes: Iterable[NodeHealth]) -> dict[str, int]:
    counts = {"online": 0, "draining": 0, "offline": 0, "unknown": 0}
    for node in nodes:
        counts[node.state if node.state in counts else "unknown"] += 1
    return counts


class RequestWindow:
    """Finished calls per wall second, for the last :data:`CHART_WINDOW_S` seconds."""

    def __init__(self, window_s: int = CHART_WINDOW_S) -> None:
        self._window_s = window_s
        self._seconds: deque[tuple[int, list[float], int]] = deque()
        """(wall second, latencies of answered calls, failed calls), oldest first."""
        self.total = 0
        self.failed_total = 0

    def add(self, wall_s: float, latency_s: float, ok: bool) -> None:
        second = math.floor(wall_s)
        if not self._seconds or self._seconds[-1][0] < second:
            self._seconds.append((second, [], 0))
        index = len(self._seconds) - 1
        while index > 0 and self._seconds[index][0] > second:
            index -= 1  # a late arrival (clock order within a second is not guaranteed)
        at, latencies, failed = self._seconds[index]
        if at != second:
            return  # older than the window kept
        if ok:
            latencies.append(latency_s)
        else:
            self._seconds[index] = (at, latencies, failed + 1)
            self.failed_total += 1
        self.total += 1
        self._trim(second)

    def _trim(self, now_second: int) -> None:
        while self._seconds and self._seconds[0][0] <= now_second - self._window_s:
            self._seconds.popleft()

    def chart(self, now_wall_s: float) -> list[dict[str, Any]]:
        """One point per second of the window ending at ``now_wall_s`` (the last full second),
        oldest first: ``t`` (seconds before now, ≤ 0), ``rate`` (calls), ``failed``,
        ``p50_ms`` and ``p95_ms`` (answered calls; None in a second without any)."""
        now_second = math.floor(now_wall_s)
        self._trim(now_second)
        by_second = {at: (lat, failed) for at, lat, failed in self._seconds}
        points: list[dict[str, Any]] = []
        for second in range(now_second - self._window_s + 1, now_second + 1):
            latencies, failed = by_second.get(second, ([], 0))
            p50 = p95 = None
            if latencies:
                ordered = np.sort(np.asarray(latencies))
                p50 = round(float(np.percentile(ordered, 50)) * 1e3, 1)
                p95 = round(float(np.percentile(ordered, 95)) * 1e3, 1)
            points.append(
                {
                    "t": second - now_second,
                    "rate": len(latencies) + failed,
                    "failed": failed,
                    "p50_ms": p50,
                    "p95_ms": p95,
                }
            )
        return points


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything one snapshot is made of."""

    now: datetime
    """The system's (simulated) time the satellites are placed at."""
    wall_s: float
    """Wall seconds (``time.time()``) of the chart's last point."""
    catalog_version: int | None
    batch: SatelliteBatch | None
    sites: Sequence[Site]
    table: RouteTable | None
    model: str
    links_up: Iterable[tuple[str, str]]
    nodes: Sequence[NodeHealth]
    handoffs: Sequence[Mapping[str, Any]]
    requests: Sequence[Mapping[str, Any]]
    window: RequestWindow
    sources: Mapping[str, bool]
    """Which inputs are connected now (tracking, routing, handoff, gateway, broker)."""


def snapshot(inputs: Inputs) -> dict[str, Any]:
    """The page's JSON document for ``inputs``."""
    satellites = [] if inputs.batch is None else satellite_points(inputs.batch, inputs.now)
    routes = station_routes(inputs.table, inputs.model, inputs.now)
    by_state = sorted(inputs.nodes, key=lambda n: (n.state == "online", n.id))
    listed = by_state[:NODE_LIST_LENGTH]
    return {
        "time": format_utc(inputs.now),
        "catalog_version": inputs.catalog_version,
        "satellite_count": 0 if inputs.batch is None else len(inputs.batch),
        "satellites": satellites,
        "stations": [
            {
                "id": site.id,
                "lat": site.lat_deg,
                "lon": site.lon_deg,
                "routes_to": routes.get(site.id),
            }
            for site in inputs.sites
        ],
        "links_up": sorted([station, sat] for station, sat in inputs.links_up),
        "nodes": {
            "counts": node_counts(inputs.nodes),
            "list": [
                {"id": n.id, "state": n.state, "queue": n.queue_depth, "busy": n.in_flight}
                for n in listed
            ],
        },
        "handoffs": list(inputs.handoffs)[-FEED_LENGTH:][::-1],
        "requests": list(inputs.requests)[-FEED_LENGTH:][::-1],
        "requests_total": inputs.window.total,
        "requests_failed_total": inputs.window.failed_total,
        "chart": inputs.window.chart(inputs.wall_s),
        "sources": dict(inputs.sources),
    }
