"""RoutingService over real gRPC on loopback: decisions, table stream updates, policy, errors."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.serving import GrpcServer
from groundplane.kernel.timestamps import from_timestamp
from groundplane.routing.convert import table_from_proto
from groundplane.routing.policy import (
    LinkQuality,
    NodeState,
    PolicyKind,
    RouteRequest,
    RoutingPolicy,
    Sighting,
)
from groundplane.routing.service import RoutingService
from groundplane.routing.servicer import RoutingServicer
from groundplane.routing.table import StationInfo, UpcomingPass
from groundplane.routing.v1 import routing_pb2 as pb
from groundplane.routing.v1 import routing_pb2_grpc as pb_grpc

T0 = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)
MODEL = "synthetic"
LONDON = (51.5074, -0.1278)
STREAM_TIMEOUT_S = 5.0


class StaticVisibility:
    """A visibility source returning fixed sightings and counting how often it is sampled."""

    def __init__(self, sightings: Sequence[Sighting]) -> None:
        self.items = list(sightings)
        self.calls = 0

    def sightings(self, at: datetime) -> list[Sighting]:
        self.calls += 1
        return list(self.items)


class Directory:
    def __init__(self, nodes: Mapping[str, NodeState]) -> None:
        self.nodes = dict(nodes)

    def snapshot(self) -> Mapping[str, NodeState]:
        return dict(self.nodes)


@dataclass
class Harness:
    service: RoutingService
    stub: pb_grpc.RoutingServiceAsyncStub
    visibility: StaticVisibility
    directory: Directory


@contextlib.asynccontextmanager
async def serving(
    sightings: Sequence[Sighting],
    nodes: Mapping[str, NodeState],
    *,
    speed: float = 1.0,
    tick_s: float = 3600.0,
    upcoming: Sequence[UpcomingPass] = (),
) -> AsyncIterator[Harness]:
    visibility = StaticVisibility(sightings)
    directory = Directory(nodes)
    service = RoutingService(
        clock=SimulatedClock(T0, speed=speed),
        stations=[StationInfo("london", *LONDON), StationInfo("madrid", 40.4168, -3.7038)],
        visibility=visibility,
        nodes=directory,
        policy=RoutingPolicy(kind=PolicyKind.MAX_ELEVATION, stickiness=None),
        tick_s=tick_s,
        upcoming=upcoming,
    )
    server = GrpcServer([RoutingServicer(service).binding()], drain_grace_s=0.1, unready_delay_s=0)
    await server.start()
    loop = asyncio.create_task(service.run())
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            yield Harness(service, pb_grpc.RoutingServiceStub(channel), visibility, directory)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await server.stop()


async def next_table(
    stream: grpc.aio.UnaryStreamCall[pb.WatchRouteTableRequest, pb.WatchRouteTableResponse],
) -> pb.RouteTable:
    item = await asyncio.wait_for(stream.read(), STREAM_TIMEOUT_S)
    assert isinstance(item, pb.WatchRouteTableResponse), "the table stream ended early"
    return item.table


def sight(sat: str, elevation_deg: float, remaining_s: float = 600.0) -> Sighting:
    return Sighting("london", sat, elevation_deg, 120.0, 900.0, remaining_s)


def online(*sats: str) -> dict[str, NodeState]:
    return {s: NodeState(s, True, frozenset({MODEL})) for s in sats}


def london_user(expected_duration_s: float = 0.0) -> pb.RouteRequest:
    return pb.RouteRequest(
        user=pb.UserLocation(lat_deg=LONDON[0], lon_deg=LONDON[1]),
        model=MODEL,
        expected_duration_s=expected_duration_s,
    )


async def test_route_returns_ordered_fallbacks_then_exclusions_with_reasons() -> None:
    """Route answers the ranked list (rank 1 first) followed by excluded candidates with their
    exclusion code and reason."""
    nodes = online("S-1", "S-2") | {"S-3": NodeState("S-3", False, frozenset({MODEL}))}
    async with serving([sight("S-1", 30.0), sight("S-2", 60.0), sight("S-3", 80.0)], nodes) as h:
        response = await h.stub.Route(london_user())
    assert [(c.satellite_id, c.rank) for c in response.candidates] == [
        ("S-2", 1),
        ("S-1", 2),
        ("S-3", 0),
    ]
    assert response.candidates[0].reason.startswith("chosen: elevation 60.0°")
    assert response.candidates[2].exclusion == pb.EXCLUSION_REASON_NODE_OFFLINE
    assert response.candidates[2].reason == "london: node S-3 offline"
    assert response.summary.startswith("S-2 via london")


async def test_watch_streams_a_new_table_after_a_link_or_node_change() -> None:
    """The stream starts with the current table; a link going down, then a node going offline,
    each push a newer table showing the change (no tick needed: ticks are an hour apart)."""
    async with serving([sight("S-1", 30.0), sight("S-2", 60.0)], online("S-1", "S-2")) as h:
        stream = h.stub.WatchRouteTable(pb.WatchRouteTableRequest())
        first = await next_table(stream)
        assert all(e.link_up for e in first.stations[0].entries)

        h.service.update_link(LinkQuality("london", "S-2", False, 0.003, 1e8, 0.0))
        second = await next_table(stream)
        entries = {e.satellite_id: e for e in second.stations[0].entries}
        assert second.version > first.version
        assert not entries["S-2"].link_up
        assert entries["S-2"].exclusion == pb.EXCLUSION_REASON_LINK_DOWN

        h.directory.nodes["S-1"] = NodeState("S-1", False, frozenset({MODEL}))
        h.service.invalidate()
        third = await next_table(stream)
        entries = {e.satellite_id: e for e in third.stations[0].entries}
        assert third.version > second.version
        assert entries["S-1"].liveness == pb.NODE_LIVENESS_OFFLINE
        assert h.visibility.calls == 1  # changes rebuild from the last sightings
        stream.cancel()


async def test_ticks_of_simulated_time_resample_visibility() -> None:
    """At 100× speed a 1 s tick is 10 ms of wall time: the loop samples visibility again on
    every tick and streams tables with advancing computed_at."""
    async with serving([sight("S-1", 30.0)], online("S-1"), speed=100.0, tick_s=1.0) as h:
        stream = h.stub.WatchRouteTable(pb.WatchRouteTableRequest())
        stamps = []
        for _ in range(3):
            table = await next_table(stream)
            stamps.append(from_timestamp(table.computed_at))
        stream.cancel()
        assert stamps == sorted(stamps)
        assert stamps[-1] > stamps[0]
        assert h.visibility.calls >= 3


async def test_streamed_table_decides_locally_like_the_service() -> None:
    """The gateway path: a streamed table converted back decides exactly as Route does."""
    sightings = [sight("S-1", 30.0), sight("S-2", 60.0, remaining_s=20.0), sight("S-3", 45.0)]
    async with serving(sightings, online("S-1", "S-2", "S-3")) as h:
        stream = h.stub.WatchRouteTable(pb.WatchRouteTableRequest())
        message = await next_table(stream)
        stream.cancel()
        remote = await h.stub.Route(london_user(expected_duration_s=30.0))
    local = table_from_proto(message).decide(
        RouteRequest(MODEL, *LONDON, expected_duration_s=30.0),
        from_timestamp(remote.decided_at),
    )
    assert [c.satellite_id for c in remote.candidates] == [
        *(r.candidate.satellite_id for r in local.ranked),
        *(e.candidate.satellite_id for e in local.excluded),
    ]
    assert [c.reason for c in remote.candidates] == [
        *(r.reason for r in local.ranked),
        *(e.reason for e in local.excluded),
    ]


@pytest.mark.parametrize(
    ("request_message", "fragment"),
    [
        (
            pb.RouteRequest(user=pb.UserLocation(lat_deg=math.nan), model=MODEL),
            "lat_deg must be a finite number",
        ),
        (
            pb.RouteRequest(user=pb.UserLocation(lat_deg=95.0), model=MODEL),
            "lat_deg must be in [-90, 90]",
        ),
        (pb.RouteRequest(model=MODEL), "user is required"),
        (
            pb.RouteRequest(user=pb.UserLocation(lat_deg=1.0), model=""),
            "model is required",
        ),
        (
            pb.RouteRequest(
                user=pb.UserLocation(lat_deg=1.0), model=MODEL, expected_duration_s=-5.0
            ),
            "expected_duration_s must be a finite number of seconds ≥ 0",
        ),
    ],
)
async def test_bad_input_is_invalid_argument(
    request_message: pb.RouteRequest, fragment: str
) -> None:
    """Malformed requests come back INVALID_ARGUMENT with the teaching message."""
    async with serving([sight("S-1", 30.0)], online("S-1")) as h:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.stub.Route(request_message)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (caught.value.details() or "")


async def test_unknown_model_is_not_found_and_nothing_usable_is_unavailable() -> None:
    """An unserved model is NOT_FOUND; a served model with no usable path now is UNAVAILABLE
    naming the next opportunity from the pass predictions."""
    aos = T0 + timedelta(minutes=9)
    upcoming = [UpcomingPass("london", "S-2", aos, aos + timedelta(minutes=6))]
    async with serving(
        [sight("S-1", 30.0, remaining_s=10.0)], online("S-1", "S-2"), upcoming=upcoming
    ) as h:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await h.stub.Route(pb.RouteRequest(user=pb.UserLocation(), model="gpt-9"))
        with pytest.raises(grpc.aio.AioRpcError) as unavailable:
            await h.stub.Route(london_user(expected_duration_s=60.0))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
    details = unavailable.value.details() or ""
    assert "pass ends in 10 s < expected 60 s" in details
    assert f"next opportunity at {aos.isoformat()}" in details


async def test_policy_round_trips_and_changes_decisions() -> None:
    """SetRoutingPolicy replaces the policy (and re-ranks at once); GetRoutingPolicy reads it
    back; an unspecified kind is INVALID_ARGUMENT."""
    sightings = [sight("S-1", 30.0, remaining_s=900.0), sight("S-2", 60.0, remaining_s=100.0)]
    async with serving(sightings, online("S-1", "S-2")) as h:
        assert (await h.stub.Route(london_user())).candidates[0].satellite_id == "S-2"
        wanted = pb.RoutingPolicy(
            kind=pb.POLICY_KIND_LONGEST_VISIBILITY,
            min_elevation_deg=5.0,
            max_loss_rate=0.2,
            report_weight=0.5,
            stickiness=pb.Stickiness(enabled=True, margin=60.0, min_dwell_s=10.0),
        )
        await h.stub.SetRoutingPolicy(pb.SetRoutingPolicyRequest(policy=wanted))
        read = (await h.stub.GetRoutingPolicy(pb.GetRoutingPolicyRequest())).policy
        assert (await h.stub.Route(london_user())).candidates[0].satellite_id == "S-1"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.stub.SetRoutingPolicy(
                pb.SetRoutingPolicyRequest(policy=pb.RoutingPolicy(min_elevation_deg=5.0))
            )
    assert read.kind == pb.POLICY_KIND_LONGEST_VISIBILITY
    assert read.stickiness.margin == 60.0
    assert read.max_stations == 3  # 0 in the request means the default
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.kind must be one of" in (caught.value.details() or "")


async def test_concurrent_refreshes_publish_distinct_increasing_versions() -> None:
    """Refreshes that overlap (a tick, a policy change, a node change) are serialised: each
    publishes its own version and the newest table is the one served."""
    async with serving([sight("sat-a", 40.0)], online("sat-a")) as harness:
        await harness.service.current_table()
        tables = await asyncio.gather(*(harness.service.refresh() for _ in range(4)))
        versions = sorted(t.version for t in tables)
        assert len(set(versions)) == 4
        assert versions == list(range(versions[0], versions[0] + 4))
        assert (await harness.service.current_table()).version == versions[-1]
