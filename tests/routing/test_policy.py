"""Routing policy: filters with reasons, each scorer, deterministic ties, stickiness and dwell."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest

from groundplane.kernel.errors import InvalidArgument, Unavailable
from groundplane.routing.backhaul import StationAccess
from groundplane.routing.policy import (
    Assignment,
    Exclusion,
    LinkQuality,
    NodeState,
    PathState,
    PolicyKind,
    RouteDecision,
    RouteRequest,
    RoutingPolicy,
    Sighting,
    Stickiness,
    Weights,
    build_path,
    decide,
    next_assignment,
)

T0 = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)
MODEL = "synthetic"
NEAR = StationAccess("gs-a", 100.0, 0.002)
FAR = StationAccess("gs-b", 2_000.0, 0.020)
NO_STICKINESS = RoutingPolicy(kind=PolicyKind.MAX_ELEVATION, stickiness=None)


def path(
    sat: str,
    *,
    station: str = "gs-a",
    elevation_deg: float = 45.0,
    remaining_s: float = 300.0,
    queue_depth: int = 0,
    online: bool | None = True,
    models: frozenset[str] = frozenset({MODEL}),
    link: LinkQuality | None = None,
    policy: RoutingPolicy = NO_STICKINESS,
    range_km: float = 800.0,
) -> PathState:
    node = None if online is None else NodeState(sat, online, models, queue_depth=queue_depth)
    sighting = Sighting(station, sat, elevation_deg, 180.0, range_km, remaining_s)
    return build_path(sighting, link, node, policy)


def order(decision: RouteDecision) -> list[str]:
    return [r.candidate.satellite_id for r in decision.ranked]


def run(
    paths: list[PathState],
    policy: RoutingPolicy,
    *,
    access: StationAccess = NEAR,
    expected_s: float = 0.0,
    in_flight: dict[str, int] | None = None,
    current: Assignment | None = None,
    now: datetime = T0,
) -> RouteDecision:
    request = RouteRequest(MODEL, 51.0, 0.0, expected_duration_s=expected_s, session_key="s")
    pairs = [(access, p) for p in paths]
    return decide(pairs, request, policy, now, local_in_flight=in_flight, current=current)


def test_max_elevation_picks_highest_and_breaks_ties_by_satellite_id() -> None:
    """The highest elevation wins; equal scores are ordered by satellite id whatever the input
    order, so two routers given the same inputs agree."""
    paths = [
        path("S-C", elevation_deg=30.0),
        path("S-B", elevation_deg=70.0),
        path("S-A", elevation_deg=70.0),
    ]
    for arrangement in (paths, paths[::-1]):
        decision = run(arrangement, NO_STICKINESS)
        assert order(decision) == ["S-A", "S-B", "S-C"]
        assert decision.ranked[0].reason.startswith("chosen: elevation 70.0°")
        assert decision.ranked[2].reason.startswith("fallback 2: elevation 30.0°")


def test_longest_visibility_counts_remaining_time_at_decision_time() -> None:
    """The longest remaining pass wins, and remaining time shrinks with the table's age."""
    policy = RoutingPolicy(kind=PolicyKind.LONGEST_VISIBILITY, stickiness=None)
    paths = [path("S-A", remaining_s=100.0), path("S-B", remaining_s=400.0)]
    request = RouteRequest(MODEL, 51.0, 0.0)
    decision = decide([(NEAR, p) for p in paths], request, policy, T0, elapsed_s=60.0)
    assert order(decision) == ["S-B", "S-A"]
    assert decision.ranked[0].candidate.remaining_s == pytest.approx(340.0)
    assert decision.ranked[1].score == pytest.approx(40.0)


def test_least_loaded_trusts_own_in_flight_first_and_weights_reports() -> None:
    """Load = router's in-flight + report_weight × reported queue depth: with weight 0.5 a node
    with 3 reported queued (1.5) beats one with 2 of our own in flight (2.0); with weight 1 the
    report counts fully (3.0) and the order flips."""
    paths = [path("S-A", queue_depth=0), path("S-B", queue_depth=3)]
    ours = {"S-A": 2}
    half = RoutingPolicy(kind=PolicyKind.LEAST_LOADED, stickiness=None, report_weight=0.5)
    full = RoutingPolicy(kind=PolicyKind.LEAST_LOADED, stickiness=None, report_weight=1.0)
    assert order(run(paths, half, in_flight=ours)) == ["S-B", "S-A"]
    assert order(run(paths, full, in_flight=ours)) == ["S-A", "S-B"]
    assert run(paths, half, in_flight=ours).ranked[0].candidate.load_estimate == 1.5


def test_lowest_latency_adds_backhaul_to_space_link_delay() -> None:
    """A satellite reached through a nearby station beats a closer-overhead one behind a long
    backhaul: the score is minus (backhaul + link) delay."""
    policy = RoutingPolicy(kind=PolicyKind.LOWEST_LATENCY, stickiness=None)
    near = path("S-NEAR", station="gs-a", range_km=1_500.0)  # 5.0 ms link
    far = path("S-FAR", station="gs-b", range_km=600.0)  # 2.0 ms link, 20 ms backhaul
    request = RouteRequest(MODEL, 51.0, 0.0)
    decision = decide([(NEAR, near), (FAR, far)], request, policy, T0)
    assert order(decision) == ["S-NEAR", "S-FAR"]
    expected_near_s = 0.002 + 1_500.0 / 299_792.458
    assert -decision.ranked[0].score == pytest.approx(expected_near_s, rel=1e-12)


def test_weighted_utility_trades_elevation_against_load() -> None:
    """The weighted utility is linear in its weights: favouring load picks the idle low
    satellite, favouring elevation picks the busy high one, and doubling one weight doubles a
    single-term utility."""
    busy_high = path("S-HIGH", elevation_deg=80.0, queue_depth=10)
    idle_low = path("S-LOW", elevation_deg=20.0, queue_depth=0)
    by_load = RoutingPolicy(stickiness=None, weights=Weights(0.0, 0.0, 1.0, 0.0, 0.0))
    by_elevation = RoutingPolicy(stickiness=None, weights=Weights(1.0, 0.0, 0.0, 0.0, 0.0))
    twice = RoutingPolicy(stickiness=None, weights=Weights(2.0, 0.0, 0.0, 0.0, 0.0))
    assert order(run([busy_high, idle_low], by_load)) == ["S-LOW", "S-HIGH"]
    assert order(run([busy_high, idle_low], by_elevation)) == ["S-HIGH", "S-LOW"]
    single = run([busy_high], by_elevation).ranked[0].score
    assert single == pytest.approx(80.0 / 90.0)
    assert run([busy_high], twice).ranked[0].score == pytest.approx(2.0 * single)


def test_filters_exclude_with_reasons() -> None:
    """Every filter excludes its path and says why, in words a person can act on."""
    policy = RoutingPolicy(kind=PolicyKind.MAX_ELEVATION, stickiness=None, min_elevation_deg=10.0)
    down = LinkQuality("gs-a", "S-DOWN", False, 0.003, 1e8, 0.0)
    lossy = LinkQuality("gs-a", "S-LOSSY", True, 0.003, 1e8, 0.8)
    paths = [
        path("S-OK", policy=policy),
        path("S-LOW", elevation_deg=7.9, policy=policy),
        path("S-DOWN", link=down, policy=policy),
        path("S-LOSSY", link=lossy, policy=policy),
        path("S-OFF", online=False, policy=policy),
        path("S-NEW", online=None, policy=policy),
        path("S-OTHER", models=frozenset({"llama"}), policy=policy),
        path("S-SHORT", remaining_s=12.0, policy=policy),
    ]
    decision = run(paths, policy, expected_s=30.0)
    assert order(decision) == ["S-OK"]
    reasons = {e.candidate.satellite_id: (e.exclusion, e.reason) for e in decision.excluded}
    assert reasons == {
        "S-LOW": (Exclusion.BELOW_THRESHOLD, "gs-a: elevation 7.9° below threshold 10.0°"),
        "S-DOWN": (Exclusion.LINK_DOWN, "gs-a: link gs-a/S-DOWN is down"),
        "S-LOSSY": (Exclusion.LOSS_TOO_HIGH, "gs-a: link loss 80.0% above limit 50.0%"),
        "S-OFF": (Exclusion.NODE_OFFLINE, "gs-a: node S-OFF offline"),
        "S-NEW": (Exclusion.NODE_UNKNOWN, "gs-a: node S-NEW never reported (no status)"),
        "S-OTHER": (
            Exclusion.MODEL_NOT_SERVED,
            "gs-a: model 'synthetic' not served by S-OTHER (serves llama)",
        ),
        "S-SHORT": (Exclusion.PASS_TOO_SHORT, "gs-a: pass ends in 12 s < expected 30 s"),
    }


def test_nothing_feasible_is_unavailable_with_next_opportunity() -> None:
    """With every path excluded the fallback list is empty; require() raises Unavailable that
    carries the next opportunity and names the exclusions."""
    upcoming = T0 + timedelta(minutes=7)
    request = RouteRequest(MODEL, 51.0, 0.0, expected_duration_s=30.0)
    decision = decide(
        [(NEAR, path("S-SHORT", remaining_s=12.0))],
        request,
        NO_STICKINESS,
        T0,
        next_opportunity=upcoming,
    )
    with pytest.raises(Unavailable) as caught:
        decision.require()
    assert caught.value.next_opportunity == upcoming
    assert "pass ends in 12 s < expected 30 s" in caught.value.message


STICKY = RoutingPolicy(
    kind=PolicyKind.MAX_ELEVATION, stickiness=Stickiness(margin=2.0, min_dwell_s=30.0)
)


def test_stickiness_does_not_flap_between_alternating_candidates() -> None:
    """Two satellites whose elevations alternate by ±0.5° every tick: without stickiness the
    pick flips on every tick; with a 2° margin the session stays on its first satellite for the
    whole sequence."""

    def simulate(policy: RoutingPolicy) -> list[str]:
        current: Assignment | None = None
        picks: list[str] = []
        for tick in range(40):
            now = T0 + timedelta(seconds=10 * tick)
            lead = 0.5 if tick % 2 == 0 else -0.5
            paths = [
                path("S-A", elevation_deg=50.0 + lead, policy=policy),
                path("S-B", elevation_deg=50.0 - lead, policy=policy),
            ]
            decision = run(paths, policy, current=current, now=now)
            current = next_assignment(decision, current, now)
            picks.append(order(decision)[0])
        return picks

    loose = simulate(NO_STICKINESS)
    sticky = simulate(STICKY)
    assert sum(a != b for a, b in itertools.pairwise(loose)) == 39
    assert set(sticky) == {"S-A"}


def test_challenger_must_beat_margin_and_wait_for_dwell() -> None:
    """A challenger 5° better (above the 2° margin) does not take over before the 30 s dwell,
    and does right after; a challenger 1.5° better never does."""
    current = Assignment("S-A", "gs-a", T0)
    paths = [path("S-A", elevation_deg=40.0), path("S-B", elevation_deg=45.0)]
    early = run(paths, STICKY, current=current, now=T0 + timedelta(seconds=29))
    assert order(early) == ["S-A", "S-B"]
    assert "dwell 29 s < minimum 30 s" in early.ranked[0].reason
    late = run(paths, STICKY, current=current, now=T0 + timedelta(seconds=31))
    assert order(late) == ["S-B", "S-A"]
    assert "switched from S-A" in late.ranked[0].reason
    close = [path("S-A", elevation_deg=40.0), path("S-B", elevation_deg=41.5)]
    much_later = run(close, STICKY, current=current, now=T0 + timedelta(hours=1))
    assert order(much_later) == ["S-A", "S-B"]
    assert "≤ margin 2" in much_later.ranked[0].reason


def test_switches_at_once_when_current_satellite_sets() -> None:
    """When the current satellite's pass no longer covers the request (it is setting), the
    session moves immediately, dwell or not, and the reason says why."""
    current = Assignment("S-A", "gs-a", T0)
    paths = [path("S-A", elevation_deg=60.0, remaining_s=5.0), path("S-B", elevation_deg=20.0)]
    decision = run(paths, STICKY, current=current, now=T0 + timedelta(seconds=1), expected_s=30.0)
    assert order(decision) == ["S-B"]
    assert "current satellite S-A infeasible (pass ends in 5 s < expected 30 s)" in (
        decision.ranked[0].reason
    )
    after = next_assignment(decision, current, T0 + timedelta(seconds=1))
    assert after == Assignment("S-B", "gs-a", T0 + timedelta(seconds=1))


def test_assignment_keeps_its_start_while_the_satellite_stays() -> None:
    """The dwell clock starts when a session moves to a satellite and is not reset by later
    decisions that keep it there."""
    current = Assignment("S-A", "gs-a", T0)
    decision = run([path("S-A")], STICKY, current=current, now=T0 + timedelta(seconds=50))
    assert next_assignment(decision, current, T0 + timedelta(seconds=50)) == current


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"lat_deg": math.nan}, "user lat_deg must be a finite number"),
        ({"lat_deg": 91.0}, "lat_deg must be in [-90, 90]"),
        ({"lon_deg": 400.0}, "lon_deg must be in [-180, 360]"),
        ({"expected_duration_s": -1.0}, "expected_duration_s must be a finite number"),
        ({"model": ""}, "model is required"),
    ],
)
def test_bad_requests_are_invalid_argument(kwargs: dict[str, object], fragment: str) -> None:
    """Malformed requests raise InvalidArgument that says what was expected."""
    fields: dict[str, object] = {"model": MODEL, "lat_deg": 10.0, "lon_deg": 10.0}
    fields.update(kwargs)
    with pytest.raises(InvalidArgument) as caught:
        RouteRequest(**fields)  # type: ignore[arg-type]
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"min_elevation_deg": 95.0}, "min_elevation_deg must be in [-90, 90]"),
        ({"max_loss_rate": 1.5}, "max_loss_rate must be a fraction"),
        ({"max_stations": 0}, "max_stations must be an integer ≥ 1"),
    ],
)
def test_bad_policies_are_invalid_argument(kwargs: dict[str, object], fragment: str) -> None:
    """Policy values outside their domain are refused with a teaching message."""
    with pytest.raises(InvalidArgument) as caught:
        RoutingPolicy(**kwargs)  # type: ignore[arg-type]
    assert fragment in caught.value.message


def test_all_zero_weights_are_refused() -> None:
    """A weighted utility with no positive weight cannot rank anything and is refused."""
    with pytest.raises(InvalidArgument, match="weights must not all be zero"):
        Weights(0.0, 0.0, 0.0, 0.0, 0.0)
