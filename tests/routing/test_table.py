"""Route table and backhaul: great-circle goldens, reachable stations, local decisions, next
opportunity, stickiness across table versions, and the adapter over tracking's visibility."""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta

import pytest
from sgp4.api import Satrec

from groundplane.kernel.errors import InvalidArgument, NotFound, Unavailable
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.sites import Site
from groundplane.routing.backhaul import BackhaulModel, great_circle_km
from groundplane.routing.policy import (
    LinkQuality,
    NodeState,
    PolicyKind,
    RouteRequest,
    RoutingPolicy,
    Sighting,
    Stickiness,
    StickyMemory,
)
from groundplane.routing.service import TrackingVisibility, stations_from_sites
from groundplane.routing.table import RouteTable, StationInfo, UpcomingPass, build_table

from ..data import DATA

ONE_KM = 1.0
HALF_PERCENT = 0.005
ONE_MICROSECOND = 1e-6
T0 = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)
MODEL = "synthetic"
LONDON = (51.5074, -0.1278)
NEW_YORK = (40.7128, -74.0060)


# ------------------------------------------------------------------------------ backhaul


def vector_great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Independent reference: angle between unit vectors, atan2(|a×b|, a·b), R = 6371.0088 km."""

    def unit(p: tuple[float, float]) -> tuple[float, float, float]:
        lat, lon = math.radians(p[0]), math.radians(p[1])
        return (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))

    (ax, ay, az), (bx, by, bz) = unit(a), unit(b)
    cross = (ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx)
    dot = ax * bx + ay * by + az * bz
    return 6371.0088 * math.atan2(math.hypot(*cross), dot)


def vincenty_wgs84_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Vincenty's inverse formula on the WGS84 ellipsoid (geodesic distance)."""
    semi_major, flattening = 6378.137, 1 / 298.257223563
    semi_minor = semi_major * (1 - flattening)
    u1 = math.atan((1 - flattening) * math.tan(math.radians(a[0])))
    u2 = math.atan((1 - flattening) * math.tan(math.radians(b[0])))
    lon_diff = math.radians(b[1] - a[1])
    lam = lon_diff
    for _ in range(200):
        sin_sigma = math.hypot(
            math.cos(u2) * math.sin(lam),
            math.cos(u1) * math.sin(u2) - math.sin(u1) * math.cos(u2) * math.cos(lam),
        )
        cos_sigma = math.sin(u1) * math.sin(u2) + math.cos(u1) * math.cos(u2) * math.cos(lam)
        sigma = math.atan2(sin_sigma, cos_sigma)
        sin_alpha = math.cos(u1) * math.cos(u2) * math.sin(lam) / sin_sigma
        cos2_alpha = 1 - sin_alpha**2
        cos_2sm = cos_sigma - 2 * math.sin(u1) * math.sin(u2) / cos2_alpha
        c = flattening / 16 * cos2_alpha * (4 + flattening * (4 - 3 * cos2_alpha))
        previous = lam
        lam = lon_diff + (1 - c) * flattening * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1 + 2 * cos_2sm**2))
        )
        if abs(lam - previous) < 1e-13:
            break
    u_sq = cos2_alpha * (semi_major**2 - semi_minor**2) / semi_minor**2
    big_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    big_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    delta_sigma = (
        big_b
        * sin_sigma
        * (
            cos_2sm
            + big_b
            / 4
            * (
                cos_sigma * (-1 + 2 * cos_2sm**2)
                - big_b / 6 * cos_2sm * (-3 + 4 * sin_sigma**2) * (-3 + 4 * cos_2sm**2)
            )
        )
    )
    return semi_minor * big_a * (sigma - delta_sigma)


def test_london_new_york_great_circle_matches_independent_references() -> None:
    """London–New York by haversine is within 1 km of an independent vector computation on the
    same sphere, and within 0.5 % of the WGS84 geodesic (Vincenty)."""
    distance = great_circle_km(*LONDON, *NEW_YORK)
    assert distance == pytest.approx(vector_great_circle_km(LONDON, NEW_YORK), abs=ONE_KM)
    geodesic = vincenty_wgs84_km(LONDON, NEW_YORK)
    assert distance == pytest.approx(geodesic, rel=HALF_PERCENT)
    assert 5_500.0 < distance < 5_650.0


def test_backhaul_delay_is_fibre_speed_times_route_factor() -> None:
    """delay = fixed + distance × 1.5 / (2/3 c): London–New York is about 43 ms one way."""
    distance = great_circle_km(*LONDON, *NEW_YORK)
    expected_s = 0.001 + distance * 1.5 / (299_792.458 * 2 / 3)
    assert BackhaulModel().delay_s(distance) == pytest.approx(expected_s, abs=ONE_MICROSECOND)
    assert 0.040 < expected_s < 0.046
    slower = BackhaulModel(route_factor=3.0, fixed_delay_s=0.0)
    assert slower.delay_s(1000.0) == pytest.approx(3000.0 / (299_792.458 * 2 / 3))


def test_backhaul_model_refuses_unphysical_parameters() -> None:
    """A route shorter than the great circle or fibre faster than light is refused."""
    with pytest.raises(InvalidArgument, match="route_factor"):
        BackhaulModel(route_factor=0.9)
    with pytest.raises(InvalidArgument, match="fibre_speed_km_s"):
        BackhaulModel(fibre_speed_km_s=400_000.0)


# ------------------------------------------------------------------------------ table

STATIONS = [
    StationInfo("london", *LONDON),
    StationInfo("madrid", 40.4168, -3.7038),
    StationInfo("new-york", *NEW_YORK),
]
POLICY = RoutingPolicy(
    kind=PolicyKind.MAX_ELEVATION, stickiness=None, max_backhaul_km=2_000.0, max_stations=3
)


def node(sat: str, *, online: bool = True, models: tuple[str, ...] = (MODEL,)) -> NodeState:
    return NodeState(sat, online, frozenset(models))


def table(
    sightings: list[Sighting],
    *,
    nodes: dict[str, NodeState] | None = None,
    links: dict[tuple[str, str], LinkQuality] | None = None,
    upcoming: list[UpcomingPass] | None = None,
    policy: RoutingPolicy = POLICY,
    version: int = 1,
) -> RouteTable:
    known = (
        nodes if nodes is not None else {s.satellite_id: node(s.satellite_id) for s in sightings}
    )
    return build_table(
        version=version,
        computed_at=T0,
        stations=STATIONS,
        sightings=sightings,
        links=links or {},
        nodes=known,
        policy=policy,
        upcoming=upcoming or [],
    )


def sight(station: str, sat: str, elevation_deg: float, remaining_s: float = 400.0) -> Sighting:
    return Sighting(station, sat, elevation_deg, 90.0, 1_000.0, remaining_s)


def test_user_reaches_only_stations_within_backhaul_range_nearest_first() -> None:
    """A Paris user reaches London then Madrid (within 2,000 km) but not New York; backhaul
    delays follow the distances."""
    routes = table([])
    access = routes.access(RouteRequest(MODEL, 48.8566, 2.3522))
    assert [a.station_id for a in access] == ["london", "madrid"]
    paris_london = great_circle_km(48.8566, 2.3522, *LONDON)
    assert access[0].distance_km == pytest.approx(paris_london, abs=ONE_KM)
    assert access[0].delay_s == pytest.approx(BackhaulModel().delay_s(paris_london))


def test_decision_from_table_spans_reachable_stations_with_reasons() -> None:
    """The fallback list mixes satellites seen from every reachable station (backhaul included);
    a satellite seen only from an unreachable station is not considered at all."""
    routes = table(
        [
            sight("london", "S-1", 40.0),
            sight("madrid", "S-2", 70.0),
            sight("madrid", "S-3", 5.0),
            sight("new-york", "S-4", 89.0),
        ]
    )
    decision = routes.decide(RouteRequest(MODEL, 48.8566, 2.3522), T0)
    assert [(r.candidate.satellite_id, r.candidate.station_id) for r in decision.ranked] == [
        ("S-2", "madrid"),
        ("S-1", "london"),
    ]
    assert [e.candidate.satellite_id for e in decision.excluded] == ["S-3"]
    assert "below threshold 10.0°" in decision.excluded[0].reason
    assert decision.table_version == 1
    assert (
        decision.ranked[0].candidate.backhaul_delay_s
        > decision.ranked[1].candidate.backhaul_delay_s
    )


def test_user_terminal_is_its_own_station_without_backhaul() -> None:
    """A user with its own terminal reaches only that station, with zero backhaul delay."""
    routes = table([sight("london", "S-1", 40.0), sight("new-york", "S-4", 60.0)])
    decision = routes.decide(RouteRequest(MODEL, terminal_site_id="new-york"), T0)
    assert [r.candidate.satellite_id for r in decision.ranked] == ["S-4"]
    assert decision.ranked[0].candidate.backhaul_delay_s == 0.0
    with pytest.raises(NotFound, match="ground station 'nowhere' is not in the route table"):
        routes.decide(RouteRequest(MODEL, terminal_site_id="nowhere"), T0)


def test_unknown_model_is_not_found_and_names_known_models() -> None:
    """A model no known node serves is NOT_FOUND, listing what is served."""
    routes = table([sight("london", "S-1", 40.0)])
    with pytest.raises(NotFound, match=r"model 'gpt-9' .* \(known models: synthetic\)"):
        routes.decide(RouteRequest("gpt-9", *LONDON), T0)


def test_far_user_gets_empty_list_naming_nearest_station() -> None:
    """A user beyond every station's backhaul reach gets no candidates and a summary naming the
    nearest station and its distance."""
    routes = table([sight("london", "S-1", 40.0)])
    sydney = (-33.8688, 151.2093)
    decision = routes.decide(RouteRequest(MODEL, *sydney), T0)
    assert decision.ranked == ()
    assert "no ground station within 2000 km" in decision.summary
    distances = {s.station_id: great_circle_km(*sydney, s.lat_deg, s.lon_deg) for s in STATIONS}
    nearest = min(distances, key=distances.__getitem__)
    assert f"the nearest, {nearest}, is {distances[nearest]:.0f} km away" in decision.summary


def test_next_opportunity_skips_passes_that_cannot_serve() -> None:
    """With nothing usable now, Unavailable carries the earliest upcoming AOS at a reachable
    station whose node serves the model and whose pass covers the expected duration."""
    aos = T0 + timedelta(minutes=5)
    upcoming = [
        UpcomingPass(
            "london", "S-SHORT", T0 + timedelta(minutes=2), T0 + timedelta(minutes=2, seconds=20)
        ),
        UpcomingPass("london", "S-LLAMA", T0 + timedelta(minutes=3), T0 + timedelta(minutes=12)),
        UpcomingPass("madrid", "S-GOOD", aos, aos + timedelta(minutes=8)),
        UpcomingPass("new-york", "S-FAR", T0 + timedelta(minutes=1), T0 + timedelta(minutes=9)),
    ]
    nodes = {
        "S-SHORT": node("S-SHORT"),
        "S-LLAMA": node("S-LLAMA", models=("llama",)),
        "S-GOOD": node("S-GOOD"),
        "S-FAR": node("S-FAR"),
        "S-OFF": node("S-OFF", online=False),
    }
    routes = table([sight("london", "S-OFF", 50.0)], nodes=nodes, upcoming=upcoming)
    decision = routes.decide(RouteRequest(MODEL, *LONDON, expected_duration_s=60.0), T0)
    with pytest.raises(Unavailable) as caught:
        decision.require()
    assert caught.value.next_opportunity == aos
    assert "node S-OFF offline" in caught.value.message


def test_table_age_shortens_remaining_pass_time() -> None:
    """Decided 20 s after the table was computed, a pass with 25 s left at computation has 5 s
    left and no longer covers a 10 s request."""
    routes = table([sight("london", "S-1", 40.0, remaining_s=25.0)])
    request = RouteRequest(MODEL, *LONDON, expected_duration_s=10.0)
    assert routes.decide(request, T0).ranked
    later = routes.decide(request, T0 + timedelta(seconds=20))
    assert later.ranked == ()
    assert "pass ends in 5 s < expected 10 s" in later.excluded[0].reason


def test_link_state_joins_into_table() -> None:
    """A link published down excludes its path; a link's delay replaces the light-time default."""
    links = {
        ("london", "S-1"): LinkQuality("london", "S-1", False, 0.004, 1e8, 0.0),
        ("london", "S-2"): LinkQuality("london", "S-2", True, 0.0123, 1e8, 0.0),
    }
    routes = table([sight("london", "S-1", 60.0), sight("london", "S-2", 30.0)], links=links)
    decision = routes.decide(RouteRequest(MODEL, *LONDON), T0)
    assert [r.candidate.satellite_id for r in decision.ranked] == ["S-2"]
    assert decision.ranked[0].candidate.link_delay_s == 0.0123
    assert "link london/S-1 is down" in decision.excluded[0].reason


def test_sticky_session_survives_new_table_versions() -> None:
    """A session keeps its satellite across refreshed tables while a challenger's advantage
    stays inside the margin, and moves when its satellite disappears."""
    policy = RoutingPolicy(
        kind=PolicyKind.MAX_ELEVATION, stickiness=Stickiness(margin=5.0, min_dwell_s=0.0)
    )
    memory = StickyMemory()
    request = RouteRequest(MODEL, *LONDON, session_key="alice")
    first = table([sight("london", "S-1", 41.0), sight("london", "S-2", 40.0)], policy=policy)
    assert first.decide(request, T0, memory=memory).ranked[0].candidate.satellite_id == "S-1"
    second = table(
        [sight("london", "S-1", 40.0), sight("london", "S-2", 44.0)], policy=policy, version=2
    )
    assert second.decide(request, T0, memory=memory).ranked[0].candidate.satellite_id == "S-1"
    third = table([sight("london", "S-2", 44.0)], policy=policy, version=3)
    assert third.decide(request, T0, memory=memory).ranked[0].candidate.satellite_id == "S-2"
    assert memory.get("alice") is not None


def test_equal_inputs_give_equal_tables_whatever_the_order() -> None:
    """Paths are sorted, so a table does not depend on the order sightings arrive in."""
    sightings = [sight("london", f"S-{i}", 20.0 + i) for i in range(5)]
    forward = table(sightings)
    backward = table(sightings[::-1])
    assert forward.stations == backward.stations


def test_tracking_visibility_feeds_a_table_with_real_satellites() -> None:
    """Real elements and real ground stations: every sighting is above its station's threshold
    with a positive time to LOS, and a user at Svalbard gets a pick seen from SvalSat."""
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    ids = [lines[i + 1][2:7].strip() for i in range(0, len(lines) - 2, 3)]
    sats = [Satrec.twoline2rv(lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)]
    with (DATA / "ground-stations.csv").open() as handle:
        sites = [
            Site(
                row[0],
                float(row[2]),
                float(row[3]),
                float(row[4]),
                name=row[1],
                min_elevation_deg=5.0,
            )
            for row in csv.reader(handle)
        ]
    at = datetime(2026, 8, 15, 6, 0, tzinfo=UTC)
    sightings = TrackingVisibility(SatelliteBatch(ids, sats), sites).sightings(at)
    assert sightings
    assert all(s.elevation_deg >= 5.0 and s.remaining_s > 0.0 for s in sightings)
    nodes = {sid: node(sid) for sid in ids}
    routes = build_table(
        version=1,
        computed_at=at,
        stations=stations_from_sites(sites),
        sightings=sightings,
        links={},
        nodes=nodes,
        policy=RoutingPolicy(min_elevation_deg=5.0),
    )
    assert routes.path_count() == len(sightings)
    svalbard = next(s for s in sites if "Svalbard" in s.name)
    decision = routes.decide(RouteRequest(MODEL, svalbard.lat_deg, svalbard.lon_deg), at)
    seen_there = {s.satellite_id for s in sightings if s.station_id == svalbard.id}
    assert decision.ranked[0].candidate.station_id == svalbard.id
    assert decision.ranked[0].candidate.satellite_id in seen_there


def test_tracking_visibility_ticks_reuse_the_previous_tick_like_a_fresh_source() -> None:
    """Consecutive ticks of one TrackingVisibility (each lending its LOS times to the next) give
    the sightings of a fresh source at every tick, remaining times within 0.1 s (the previous
    tick's grid), and a tick back in time is computed afresh."""
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    ids = [lines[i + 1][2:7].strip() for i in range(0, len(lines) - 2, 3)]
    sats = [Satrec.twoline2rv(lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)]
    batch = SatelliteBatch(ids, sats)
    with (DATA / "ground-stations.csv").open() as handle:
        sites = [
            Site(row[0], float(row[2]), float(row[3]), float(row[4]), min_elevation_deg=5.0)
            for row in csv.reader(handle)
        ]
    streaming = TrackingVisibility(batch, sites)
    at = datetime(2026, 8, 15, 6, 0, tzinfo=UTC)
    for step_s in (0.0, 1.0, 1.0, 30.0, -600.0):
        at += timedelta(seconds=step_s)
        got = streaming.sightings(at)
        want = TrackingVisibility(batch, sites).sightings(at)
        assert [(s.station_id, s.satellite_id) for s in got] == [
            (s.station_id, s.satellite_id) for s in want
        ]
        assert all(
            math.isinf(a.remaining_s) == math.isinf(b.remaining_s)
            and (math.isinf(a.remaining_s) or abs(a.remaining_s - b.remaining_s) < 0.1)
            for a, b in zip(got, want, strict=True)
        )
        assert len(got) > 50
