"""Energy-aware routing: the reserve filter, the thermal filter and the sunlit-charged-cool score.

The routing side predicts from a node's telemetry; the node side (``node/energy.py``) is the
model that would then really run. These tests hold one against the other.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from groundplane.kernel.errors import Unavailable
from groundplane.node.energy import EnergyFleet, EnergyParams
from groundplane.routing.backhaul import StationAccess
from groundplane.routing.convert import table_from_proto, table_to_proto
from groundplane.routing.energy import PathEnergy, energy_budget
from groundplane.routing.policy import (
    Exclusion,
    NodeState,
    PathState,
    PolicyKind,
    RouteRequest,
    RoutingPolicy,
    Sighting,
    Weights,
    build_path,
    decide,
)
from groundplane.routing.table import StationInfo, build_table

T0 = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
MODEL = "synthetic"
NEAR = StationAccess("gs-a", 100.0, 0.002)
ENERGY = RoutingPolicy(kind=PolicyKind.ENERGY_AWARE, stickiness=None)
BLIND = RoutingPolicy(kind=PolicyKind.WEIGHTED, stickiness=None)
PARAMS = EnergyParams(bus_w=150.0, battery_capacity_wh=2000.0, reserve_soc=0.3)
REQUEST_W = 900.0


def telemetry(
    *,
    battery_wh: float,
    sunlit: float,
    sunlight_in_s: float = 0.0,
    eclipse_in_s: float = float("inf"),
    eclipse_duration_s: float = 2100.0,
    compute_w: float = 0.0,
    temperature_k: float = 300.0,
) -> PathEnergy:
    return PathEnergy(
        battery_wh=battery_wh,
        capacity_wh=PARAMS.battery_capacity_wh,
        reserve_wh=PARAMS.reserve_wh,
        bus_w=PARAMS.bus_w,
        request_w=REQUEST_W,
        solar_array_w=PARAMS.solar_array_w,
        discharge_efficiency=PARAMS.discharge_efficiency,
        temperature_k=temperature_k,
        temperature_limit_k=PARAMS.temperature_limit_k,
        throttled=temperature_k >= PARAMS.temperature_limit_k,
        sunlit_fraction=sunlit,
        sunlight_in_s=sunlight_in_s,
        eclipse_in_s=eclipse_in_s,
        eclipse_duration_s=eclipse_duration_s,
        compute_w=compute_w,
    )


def path(sat: str, energy: PathEnergy | None, *, elevation_deg: float = 45.0) -> PathState:
    node = NodeState(sat, True, frozenset({MODEL}), energy=energy)
    return build_path(
        Sighting("gs-a", sat, elevation_deg, 180.0, 800.0, 3600.0), None, node, ENERGY
    )


def simulate_min_battery_wh(energy: PathEnergy, request_s: float) -> float:
    """Run the node model with the request placed: the telemetry's Sun profile (sunlit until the
    eclipse, dark for its length, then sunlit) and the compute for ``request_s``; the lowest
    battery level before the request ends or, if later, the Sun returns."""
    if energy.in_eclipse:
        dark = (0.0, energy.sunlight_in_s)
    elif np.isfinite(energy.eclipse_in_s):
        dark = (energy.eclipse_in_s, energy.eclipse_in_s + energy.eclipse_duration_s)
    else:
        dark = (np.inf, np.inf)
    horizon_s = max(request_s, dark[1] if np.isfinite(dark[1]) else 0.0)
    params = replace(PARAMS, initial_soc=energy.battery_wh / PARAMS.battery_capacity_wh)
    fleet = EnergyFleet(("n",), [params])
    lowest = energy.battery_wh
    edges = sorted({request_s, *(e for e in dark if np.isfinite(e) and e > 0.0), horizon_s})
    t = 0.0
    while t < horizon_s:
        dt_s = min(10.0, next(e for e in edges if e > t) - t)
        sun = 0.0 if dark[0] <= t < dark[1] else energy.sunlit_fraction or 1.0
        compute = energy.compute_w + REQUEST_W if t < request_s else 0.0
        fleet.advance(dt_s, np.array([sun]), np.array([compute]))
        lowest = min(lowest, float(fleet.state.battery_wh[0]))
        t += dt_s
    return lowest


def test_a_long_request_avoids_a_low_battery_node_entering_eclipse() -> None:
    """A 20-minute request offered to a node at 38 % charge that enters a 35-minute eclipse in
    60 s: energy-blind routing picks it (it is the highest), the node model confirms its battery
    would then fall below the reserve, and energy-aware routing sends the request to the sunlit
    node instead, naming the reserve with the figures; with no other node it refuses with
    UNAVAILABLE and the same reason."""
    low = telemetry(battery_wh=760.0, sunlit=1.0, eclipse_in_s=60.0)
    sunny = telemetry(battery_wh=1500.0, sunlit=1.0)
    request_s = 1200.0
    assert simulate_min_battery_wh(low, request_s) < PARAMS.reserve_wh
    assert simulate_min_battery_wh(sunny, request_s) >= PARAMS.reserve_wh
    request = RouteRequest(MODEL, 51.0, 0.0, expected_duration_s=request_s)
    paths = [(NEAR, path("sat-low", low, elevation_deg=80.0)), (NEAR, path("sat-sun", sunny))]
    blind = decide(paths, request, BLIND, T0)
    assert blind.require().candidate.satellite_id == "sat-low"
    aware = decide(paths, request, ENERGY, T0)
    assert [r.candidate.satellite_id for r in aware.ranked] == ["sat-sun"]
    (dropped,) = aware.excluded
    assert dropped.exclusion is Exclusion.ENERGY_RESERVE
    assert "node sat-low battery 760 Wh would fall to" in dropped.detail
    assert "< reserve 600 Wh" in dropped.detail
    assert "eclipse in 60 s" in dropped.detail
    alone = decide(paths[:1], request, ENERGY, T0)
    with pytest.raises(Unavailable, match=r"battery 760 Wh would fall to .* < reserve 600 Wh"):
        alone.require()


def test_whatever_routing_accepts_never_breaches_the_reserve_in_the_node_model() -> None:
    """Over 150 random telemetries (sunlit, entering eclipse, in eclipse; charge 20–100 %;
    compute in use) and request lengths up to 30 min: every node the energy filter accepts
    keeps its battery at or above the reserve when the node model runs the request (the filter
    is conservative), and the filter does exclude some (it is not vacuous)."""
    rng = np.random.default_rng(16)
    accepted = excluded = 0
    for _ in range(150):
        kind = rng.integers(3)
        battery = float(rng.uniform(0.2, 1.0)) * PARAMS.battery_capacity_wh
        compute = float(rng.choice([0.0, 450.0, 900.0]))
        if kind == 0:
            energy = telemetry(battery_wh=battery, sunlit=1.0, compute_w=compute)
        elif kind == 1:
            energy = telemetry(
                battery_wh=battery,
                sunlit=1.0,
                eclipse_in_s=float(rng.uniform(0, 1800)),
                eclipse_duration_s=float(rng.uniform(600, 2200)),
                compute_w=compute,
            )
        else:
            energy = telemetry(
                battery_wh=battery,
                sunlit=0.0,
                sunlight_in_s=float(rng.uniform(0, 2200)),
                eclipse_in_s=0.0,
                compute_w=compute,
            )
        request_s = float(rng.uniform(10, 1800))
        request = RouteRequest(MODEL, 51.0, 0.0, expected_duration_s=request_s)
        decision = decide([(NEAR, path("sat", energy))], request, ENERGY, T0)
        if decision.ranked:
            accepted += 1
            assert simulate_min_battery_wh(energy, request_s) >= PARAMS.reserve_wh - 1e-6, energy
        else:
            excluded += 1
            assert decision.excluded[0].exclusion is Exclusion.ENERGY_RESERVE
    assert accepted > 25
    assert excluded > 25


def test_hot_nodes_are_excluded_and_sunlit_charged_nodes_preferred() -> None:
    """A node at its temperature limit is excluded as too hot; among the rest the energy-aware
    score puts the sunlit, charged node ahead of a higher one in eclipse; the energy weight in
    the weighted utility does the same and turns the filter on; energy-blind ignores both."""
    hot = telemetry(battery_wh=1900.0, sunlit=1.0, temperature_k=330.0)
    dark = telemetry(battery_wh=1900.0, sunlit=0.0, sunlight_in_s=300.0, eclipse_in_s=0.0)
    lit = telemetry(battery_wh=1900.0, sunlit=1.0)
    paths = [
        (NEAR, path("sat-hot", hot, elevation_deg=85.0)),
        (NEAR, path("sat-dark", dark, elevation_deg=80.0)),
        (NEAR, path("sat-lit", lit, elevation_deg=30.0)),
    ]
    request = RouteRequest(MODEL, 51.0, 0.0, expected_duration_s=10.0)
    aware = decide(paths, request, ENERGY, T0)
    assert [r.candidate.satellite_id for r in aware.ranked] == ["sat-lit", "sat-dark"]
    assert aware.excluded[0].exclusion is Exclusion.TOO_HOT
    assert "330.0 K ≥ limit 328.1 K" in aware.excluded[0].detail
    weighted = RoutingPolicy(kind=PolicyKind.WEIGHTED, weights=Weights(energy=5.0), stickiness=None)
    assert decide(paths, request, weighted, T0).require().candidate.satellite_id == "sat-lit"
    blind = decide(paths, request, BLIND, T0)
    assert blind.require().candidate.satellite_id == "sat-hot"
    assert not blind.excluded


def test_energy_travels_in_the_route_table_stream() -> None:
    """The gateway decides from the streamed table: the energy of every path, the policy kind
    and the energy weight survive the protobuf round trip, so its decision is the same."""
    low = telemetry(battery_wh=650.0, sunlit=0.0, sunlight_in_s=1500.0, eclipse_in_s=0.0)
    nodes = {
        "sat-low": NodeState("sat-low", True, frozenset({MODEL}), energy=low),
        "sat-ok": NodeState(
            "sat-ok", True, frozenset({MODEL}), energy=telemetry(battery_wh=1800.0, sunlit=1.0)
        ),
    }
    sightings = [
        Sighting("gs-a", "sat-low", 80.0, 0.0, 600.0, 900.0),
        Sighting("gs-a", "sat-ok", 20.0, 0.0, 1500.0, 900.0),
    ]
    policy = replace(ENERGY, weights=Weights(energy=2.0))
    table = build_table(
        version=1,
        computed_at=T0,
        stations=[StationInfo("gs-a", 51.0, 0.0)],
        sightings=sightings,
        links={},
        nodes=nodes,
        policy=policy,
    )
    back = table_from_proto(table_to_proto(table))
    assert back.policy == policy
    assert back.stations[0].paths == table.stations[0].paths
    request = RouteRequest(MODEL, 51.0, 0.0, expected_duration_s=60.0)
    assert energy_budget(low, 60.0).breaches(low)
    assert back.decide(request, T0).require().candidate.satellite_id == "sat-ok"


def test_an_old_report_is_aged_to_the_decision_instant() -> None:
    """A node reported sunlit at 700 Wh with an eclipse due in 60 s: a 60 s request decided at
    once fits (it ends as the eclipse starts), but decided 300 s after the report the node is
    taken as 240 s into the eclipse (battery drained by the bus meanwhile) and the rest of the
    eclipse takes it below the reserve, so it is excluded; the detail says so."""
    report = replace(
        telemetry(battery_wh=700.0, sunlit=1.0, eclipse_in_s=60.0),
        measured_at_s=T0.timestamp(),
    )
    request = RouteRequest(MODEL, 51.0, 0.0, expected_duration_s=60.0)
    paths = [(NEAR, path("sat", report))]
    assert decide(paths, request, ENERGY, T0).ranked
    later = decide(paths, request, ENERGY, T0 + timedelta(seconds=300))
    assert not later.ranked
    assert later.excluded[0].exclusion is Exclusion.ENERGY_RESERVE
    assert "in eclipse, sunlight in 1860 s" in later.excluded[0].detail
