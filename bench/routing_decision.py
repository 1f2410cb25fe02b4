"""Benchmark: per-request routing decisions from a cached route table at 1,000 requests/s.

Run: .venv/bin/python bench/routing_decision.py

Table: 1,000 synthetic satellites (a 550 km / 53° shell, 40 planes × 25), 50 ground stations
spread over ±50° latitude (10° minimum elevation), real geometry from tracking's ``visibility``
at one instant, every node with a load report (5 % offline, 2 models), a link state per path.
Users: 1,000 points scattered within ~1,000 km of random stations; the policy is the weighted
utility with stickiness (up to 3 stations within 3,000 km per user).

Requests arrive paced at 1,000/s (a random user, a model, a 30 s expected duration, the user as
session key, the gateway's own in-flight counter updated); each decision is timed alone.
Reference in the same run: for the same user, a dict lookup of the same candidate paths and a
sort by elevation (the least a decision could cost in Python). Also reported: the first decision
per user (reachable stations not yet cached), building the table and encoding it for the stream.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from sgp4.api import WGS72, Satrec

from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.sites import Site
from groundplane.routing.convert import table_to_proto
from groundplane.routing.policy import (
    InFlightCounter,
    LinkQuality,
    NodeState,
    PathState,
    RouteRequest,
    RoutingPolicy,
    StickyMemory,
)
from groundplane.routing.service import TrackingVisibility, stations_from_sites
from groundplane.routing.table import RouteTable, build_table

EPOCH_DAYS_SINCE_1949_12_31 = 27_990.0  # 2026-08-21
AT = datetime(2026, 8, 21, 6, 0, tzinfo=UTC)
RATE_PER_S = 1_000
REQUESTS = 5_000
MODELS = ("synthetic", "llama-8b")


def satellites(planes: int = 40, per_plane: int = 25) -> SatelliteBatch:
    ids: list[str] = []
    sats: list[Satrec] = []
    a_er = (6378.135 + 550.0) / 6378.135
    n_rad_min = math.sqrt(1.0 / a_er**3) * 0.0743669161
    for plane in range(planes):
        for slot in range(per_plane):
            sat = Satrec()
            sat.sgp4init(
                WGS72, "i", len(sats) + 1, EPOCH_DAYS_SINCE_1949_12_31, 2.0e-5, 0.0, 0.0,
                1.0e-4, math.radians(90.0), math.radians(53.0),
                math.radians(slot * 360.0 / per_plane + plane * 4.5), n_rad_min,
                math.radians(plane * 360.0 / planes),
            )  # fmt: skip
            sats.append(sat)
            ids.append(f"SAT-{len(sats):04d}")
    return SatelliteBatch(ids, sats)


def stations(rng: random.Random, count: int = 50) -> list[Site]:
    return [
        Site(
            f"gs-{i:02d}",
            math.degrees(math.asin(rng.uniform(-0.77, 0.77))),
            rng.uniform(-180.0, 180.0),
            50.0,
            min_elevation_deg=10.0,
        )
        for i in range(count)
    ]


def users(rng: random.Random, sites: list[Site], count: int = 1_000) -> list[tuple[float, float]]:
    out = []
    for _ in range(count):
        site = rng.choice(sites)
        lat = max(-89.0, min(89.0, site.lat_deg + rng.uniform(-8.0, 8.0)))
        lon = (site.lon_deg + rng.uniform(-8.0, 8.0) + 180.0) % 360.0 - 180.0
        out.append((lat, lon))
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def reference_lookup(
    index: dict[tuple[float, float], list[PathState]], key: tuple[float, float]
) -> list[PathState]:
    return sorted(index[key], key=lambda p: -p.elevation_deg)


def main() -> None:  # noqa: PLR0915 - the benchmark's stages in order, each timed and printed inline
    rng = random.Random(11)
    batch = satellites()
    sites = stations(rng)
    people = users(rng, sites)

    started = time.perf_counter()
    sightings = TrackingVisibility(batch, sites).sightings(AT)
    visibility_s = time.perf_counter() - started

    nodes = {
        sid: NodeState(
            sid,
            online=rng.random() > 0.05,
            models=frozenset(MODELS if rng.random() < 0.5 else MODELS[:1]),
            queue_depth=rng.randint(0, 8),
            in_flight=rng.randint(0, 4),
            free_slots=rng.randint(0, 4),
            reported_at=AT - timedelta(seconds=2),
        )
        for sid in batch.ids
    }
    links = {
        (s.station_id, s.satellite_id): LinkQuality(
            s.station_id,
            s.satellite_id,
            True,
            s.range_km / 299_792.458 + 0.0005,
            rng.choice((50e6, 100e6, 200e6)),
            rng.choice((0.0, 0.001, 0.01)),
        )
        for s in sightings
    }
    policy = RoutingPolicy()
    started = time.perf_counter()
    table: RouteTable = build_table(
        version=1,
        computed_at=AT,
        stations=stations_from_sites(sites),
        sightings=sightings,
        links=links,
        nodes=nodes,
        policy=policy,
    )
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    encoded = table_to_proto(table).SerializeToString()
    encode_s = time.perf_counter() - started

    requests = [
        RouteRequest(
            rng.choice(MODELS), lat, lon, expected_duration_s=30.0, session_key=f"user-{i}"
        )
        for i, (lat, lon) in enumerate(people)
    ]
    memory = StickyMemory()
    in_flight = InFlightCounter()

    cold: list[float] = []
    for request in requests:  # first decision per user: reachable stations not cached yet
        t0 = time.perf_counter_ns()
        table.decide(request, AT, local_in_flight=in_flight, memory=memory)
        cold.append((time.perf_counter_ns() - t0) / 1e3)

    index = {
        (r.lat_deg, r.lon_deg): [
            p for a in table.access(r) for p in table.station(a.station_id).paths
        ]
        for r in requests
    }
    paths_per_request = statistics.mean(len(v) for v in index.values())

    decision_us: list[float] = []
    reference_us: list[float] = []
    outstanding: list[str] = []
    chosen = 0
    period_ns = 1_000_000_000 // RATE_PER_S
    begin = time.perf_counter_ns()
    for i in range(REQUESTS):
        due = begin + i * period_ns
        while (wait := due - time.perf_counter_ns()) > 0:
            if wait > 300_000:
                time.sleep((wait - 200_000) / 1e9)
        request = requests[rng.randrange(len(requests))]
        now = AT + timedelta(milliseconds=i)
        t0 = time.perf_counter_ns()
        decision = table.decide(request, now, local_in_flight=in_flight, memory=memory)
        t1 = time.perf_counter_ns()
        reference_lookup(index, (request.lat_deg, request.lon_deg))
        t2 = time.perf_counter_ns()
        decision_us.append((t1 - t0) / 1e3)
        reference_us.append((t2 - t1) / 1e3)
        if decision.ranked:
            chosen += 1
            sat = decision.ranked[0].candidate.satellite_id
            in_flight.started(sat)
            outstanding.append(sat)
        if len(outstanding) > 50:  # requests complete ~50 ms after they start
            in_flight.finished(outstanding.pop(0))
    achieved = REQUESTS / ((time.perf_counter_ns() - begin) / 1e9)

    p50, p99 = percentile(decision_us, 50), percentile(decision_us, 99)
    r50, r99 = percentile(reference_us, 50), percentile(reference_us, 99)
    print(
        f"table: {len(batch)} satellites, {len(sites)} stations, {table.path_count()} visible "
        f"paths, {len(people)} users, {paths_per_request:.1f} candidate paths per request"
    )
    print(
        f"visibility sample {visibility_s * 1e3:.1f} ms, table build {build_s * 1e3:.1f} ms, "
        f"table encode {encode_s * 1e3:.1f} ms ({len(encoded) / 1024:.0f} KiB per stream update)"
    )
    print(
        f"paced {REQUESTS} requests at {RATE_PER_S}/s (achieved {achieved:.0f}/s), "
        f"{chosen} routed, {REQUESTS - chosen} with no usable candidate"
    )
    print(
        f"decision   p50 {p50:7.1f} µs  p99 {p99:7.1f} µs  max {max(decision_us):7.1f} µs  "
        f"(target p99 < 1000 µs: {'OK' if p99 < 1000 else 'MISSED'})"
    )
    print(f"reference  p50 {r50:7.1f} µs  p99 {r99:7.1f} µs  (dict lookup + sort of same paths)")
    print(f"ratio decision/reference  p50 {p50 / r50:.1f}×  p99 {p99 / r99:.1f}×")
    print(
        f"first decision per user (station lookup uncached): p50 {percentile(cold, 50):.1f} µs "
        f"p99 {percentile(cold, 99):.1f} µs"
    )


if __name__ == "__main__":
    main()
