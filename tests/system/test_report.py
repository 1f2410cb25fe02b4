"""The run's counters: UNAVAILABLE requests are counted by the reason the gateway gave.

The details classified here are produced by the real routing code (``decide`` and
``RouteTable.decide``), so a change of their wording that the classifier misses fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from groundplane.routing.policy import NodeState, RouteRequest, decide
from groundplane.routing.table import StationInfo, build_table
from groundplane.scenario import DEFAULT_MODEL, DEFAULT_POLICY
from groundplane.system.report import (
    OTHER_UNAVAILABLE,
    Outcome,
    RunStats,
    TraceRecord,
    unavailable_reason,
)

NOW = datetime(2026, 8, 15, tzinfo=UTC)
NO_SATELLITE = "no satellite in view of the user's station"
OUT_OF_REACH = "no ground station within backhaul reach of the user"


def _detail_of_empty_sky() -> str:
    """Routing's UNAVAILABLE details for a user near a station that sees no satellite."""
    decision = decide([], RouteRequest(model=DEFAULT_MODEL.name), DEFAULT_POLICY, NOW)
    assert not decision.ranked
    return f"UNAVAILABLE: {decision.summary}"


def _detail_of_remote_user() -> str:
    """Routing's UNAVAILABLE details for a user thousands of km from the only station."""
    table = build_table(
        version=1,
        computed_at=NOW,
        stations=[StationInfo("svalbard", 78.23, 15.39)],
        sightings=[],
        links={},
        nodes={"sat-1": NodeState("sat-1", True, frozenset({DEFAULT_MODEL.name}))},
        policy=DEFAULT_POLICY,
    )
    decision = table.decide(RouteRequest(model=DEFAULT_MODEL.name, lat_deg=-10, lon_deg=-140), NOW)
    assert not decision.ranked
    return f"UNAVAILABLE: {decision.summary}"


def _unavailable(detail: str) -> TraceRecord:
    return TraceRecord(
        request_id="r",
        submitted_at=NOW,
        completed_at=NOW,
        status=Outcome.REJECTED_UNAVAILABLE,
        user_lat=0.0,
        user_lon=0.0,
        station="",
        satellite="",
        attempts=0,
        latency_ms=1.0,
        detail=detail,
    )


def test_unavailable_details_from_routing_map_to_their_reason() -> None:
    """An empty sky over the user's station and a user out of every station's reach each map to
    their own short reason (ids, distances and times dropped); unknown details map to 'other'."""
    assert unavailable_reason(_detail_of_empty_sky()) == NO_SATELLITE
    assert unavailable_reason(_detail_of_remote_user()) == OUT_OF_REACH
    assert unavailable_reason("UNAVAILABLE: something new") == OTHER_UNAVAILABLE


def test_summary_counts_unavailable_requests_by_reason() -> None:
    """Recorded UNAVAILABLE requests are counted per reason, most frequent first, and the counts
    add up to ``rejected_unavailable``; other outcomes are not counted there."""
    stats = RunStats()
    for detail in (_detail_of_empty_sky(), _detail_of_remote_user(), _detail_of_empty_sky()):
        stats.record(_unavailable(detail))
    stats.record(TraceRecord("ok", NOW, NOW, Outcome.OK, 0.0, 0.0, "svalbard", "sat-1", 1, 5.0))
    requests = stats.summary()["requests"]
    assert requests["unavailable_reasons"] == {NO_SATELLITE: 2, OUT_OF_REACH: 1}
    assert list(requests["unavailable_reasons"]) == [NO_SATELLITE, OUT_OF_REACH]
    assert sum(requests["unavailable_reasons"].values()) == requests["rejected_unavailable"]
