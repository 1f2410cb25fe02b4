"""The routing contract's messages both ways: ``groundplane.routing.v1`` protobuf ⇄ domain.

The one place routing's protobuf messages are read and written. The servicer
(:mod:`groundplane.routing.servicer`) encodes decisions and tables; the client side
(:mod:`groundplane.routing.client`: the gateway, any caller of ``WatchRouteTable``) decodes a
streamed table back into a :class:`~groundplane.routing.table.RouteTable` with
:func:`table_from_proto` and decides locally. Neither side imports the other.
"""

from __future__ import annotations

from groundplane.kernel.errors import InvalidArgument
from groundplane.kernel.timestamps import from_timestamp, to_timestamp
from groundplane.routing.backhaul import BackhaulModel
from groundplane.routing.energy import PathEnergy
from groundplane.routing.policy import (
    DEFAULT_POLICY,
    Candidate,
    Exclusion,
    Liveness,
    PathState,
    PolicyKind,
    RouteDecision,
    RouteRequest,
    RoutingPolicy,
    Stickiness,
    Weights,
)
from groundplane.routing.table import RouteTable, StationInfo, StationRoutes, UpcomingPass
from groundplane.routing.v1 import routing_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RoutingService"].full_name

_KIND_TO_PROTO = {
    PolicyKind.MAX_ELEVATION: pb.POLICY_KIND_MAX_ELEVATION,
    PolicyKind.LONGEST_VISIBILITY: pb.POLICY_KIND_LONGEST_VISIBILITY,
    PolicyKind.LEAST_LOADED: pb.POLICY_KIND_LEAST_LOADED,
    PolicyKind.LOWEST_LATENCY: pb.POLICY_KIND_LOWEST_LATENCY,
    PolicyKind.WEIGHTED: pb.POLICY_KIND_WEIGHTED,
    PolicyKind.ENERGY_AWARE: pb.POLICY_KIND_ENERGY_AWARE,
}
_KIND_FROM_PROTO = {v: k for k, v in _KIND_TO_PROTO.items()}
_EXCLUSION_TO_PROTO = {
    Exclusion.BELOW_THRESHOLD: pb.EXCLUSION_REASON_BELOW_THRESHOLD,
    Exclusion.LINK_DOWN: pb.EXCLUSION_REASON_LINK_DOWN,
    Exclusion.NODE_OFFLINE: pb.EXCLUSION_REASON_NODE_OFFLINE,
    Exclusion.NODE_UNKNOWN: pb.EXCLUSION_REASON_NODE_UNKNOWN,
    Exclusion.MODEL_NOT_SERVED: pb.EXCLUSION_REASON_MODEL_NOT_SERVED,
    Exclusion.PASS_TOO_SHORT: pb.EXCLUSION_REASON_PASS_TOO_SHORT,
    Exclusion.LOSS_TOO_HIGH: pb.EXCLUSION_REASON_LOSS_TOO_HIGH,
    Exclusion.ENERGY_RESERVE: pb.EXCLUSION_REASON_ENERGY_RESERVE,
    Exclusion.TOO_HOT: pb.EXCLUSION_REASON_TOO_HOT,
}
_EXCLUSION_FROM_PROTO = {v: k for k, v in _EXCLUSION_TO_PROTO.items()}
_LIVENESS_TO_PROTO = {
    Liveness.ONLINE: pb.NODE_LIVENESS_ONLINE,
    Liveness.OFFLINE: pb.NODE_LIVENESS_OFFLINE,
    Liveness.UNKNOWN: pb.NODE_LIVENESS_UNKNOWN,
}
_LIVENESS_FROM_PROTO = {v: k for k, v in _LIVENESS_TO_PROTO.items()}


def policy_to_proto(policy: RoutingPolicy) -> pb.RoutingPolicy:
    w = policy.weights
    message = pb.RoutingPolicy(
        kind=_KIND_TO_PROTO[policy.kind],
        weights=pb.Weights(
            elevation=w.elevation,
            remaining_visibility=w.remaining_visibility,
            load=w.load,
            link_quality=w.link_quality,
            latency=w.latency,
            energy=w.energy,
        ),
        min_elevation_deg=policy.min_elevation_deg,
        max_loss_rate=policy.max_loss_rate,
        max_backhaul_km=policy.max_backhaul_km,
        max_stations=policy.max_stations,
        report_weight=policy.report_weight,
    )
    if policy.stickiness is not None:
        message.stickiness.CopyFrom(
            pb.Stickiness(
                enabled=True,
                margin=policy.stickiness.margin,
                min_dwell_s=policy.stickiness.min_dwell_s,
            )
        )
    return message


def policy_from_proto(message: pb.RoutingPolicy) -> RoutingPolicy:
    """A validated policy; zero ``max_backhaul_km``/``max_stations`` mean the defaults."""
    kind = _KIND_FROM_PROTO.get(message.kind)
    if kind is None:
        names = ", ".join(pb.PolicyKind.Name(v) for v in _KIND_FROM_PROTO)
        raise InvalidArgument(f"policy.kind must be one of {names}, got {message.kind}")
    weights = Weights()
    if message.HasField("weights"):
        w = message.weights
        weights = Weights(
            elevation=w.elevation,
            remaining_visibility=w.remaining_visibility,
            load=w.load,
            link_quality=w.link_quality,
            latency=w.latency,
            energy=w.energy,
        )
    stickiness = None
    if message.HasField("stickiness") and message.stickiness.enabled:
        stickiness = Stickiness(
            margin=message.stickiness.margin, min_dwell_s=message.stickiness.min_dwell_s
        )
    return RoutingPolicy(
        kind=kind,
        weights=weights,
        min_elevation_deg=message.min_elevation_deg,
        max_loss_rate=message.max_loss_rate,
        stickiness=stickiness,
        max_backhaul_km=message.max_backhaul_km or DEFAULT_POLICY.max_backhaul_km,
        max_stations=message.max_stations or DEFAULT_POLICY.max_stations,
        report_weight=message.report_weight,
    )


def request_from_proto(message: pb.RouteRequest) -> RouteRequest:
    if not message.HasField("user"):
        raise InvalidArgument(
            "user is required: expected a location (lat_deg, lon_deg) or a terminal_site_id"
        )
    return RouteRequest(
        model=message.model,
        lat_deg=message.user.lat_deg,
        lon_deg=message.user.lon_deg,
        terminal_site_id=message.user.terminal_site_id,
        expected_duration_s=message.expected_duration_s,
        session_key=message.session_key,
    )


def _candidate(c: Candidate) -> pb.Candidate:
    return pb.Candidate(
        station_id=c.station_id,
        satellite_id=c.satellite_id,
        elevation_deg=c.elevation_deg,
        azimuth_deg=c.azimuth_deg,
        range_km=c.range_km,
        remaining_s=c.remaining_s,
        backhaul_delay_s=c.backhaul_delay_s,
        link_delay_s=c.link_delay_s,
        rate_bps=c.rate_bps,
        loss_rate=c.loss_rate,
        load_estimate=c.load_estimate,
    )


def decision_to_proto(decision: RouteDecision) -> pb.RouteResponse:
    candidates: list[pb.Candidate] = []
    for ranked in decision.ranked:
        message = _candidate(ranked.candidate)
        message.rank = ranked.rank
        message.score = ranked.score
        message.reason = ranked.reason
        candidates.append(message)
    for excluded in decision.excluded:
        message = _candidate(excluded.candidate)
        message.exclusion = _EXCLUSION_TO_PROTO[excluded.exclusion]
        message.reason = excluded.reason
        candidates.append(message)
    return pb.RouteResponse(
        candidates=candidates,
        decided_at=to_timestamp(decision.decided_at),
        table_version=decision.table_version,
        summary=decision.summary,
    )


def _entry_to_proto(path: PathState) -> pb.TableEntry:
    return pb.TableEntry(
        satellite_id=path.satellite_id,
        elevation_deg=path.elevation_deg,
        azimuth_deg=path.azimuth_deg,
        range_km=path.range_km,
        los_in_s=path.los_in_s,
        link_up=path.link_up,
        link_delay_s=path.link_delay_s,
        rate_bps=path.rate_bps,
        loss_rate=path.loss_rate,
        liveness=_LIVENESS_TO_PROTO[path.liveness],
        models=sorted(path.models),
        queue_depth=path.queue_depth,
        in_flight=path.in_flight,
        free_slots=path.free_slots,
        exclusion=(
            _EXCLUSION_TO_PROTO[path.exclusion]
            if path.exclusion is not None
            else pb.EXCLUSION_REASON_UNSPECIFIED
        ),
        exclusion_detail=path.exclusion_detail,
        energy=energy_to_proto(path.energy) if path.energy is not None else None,
    )


_ENERGY_FIELDS = tuple(f.name for f in pb.PathEnergy.DESCRIPTOR.fields)


def energy_to_proto(energy: PathEnergy) -> pb.PathEnergy:
    return pb.PathEnergy(**{name: getattr(energy, name) for name in _ENERGY_FIELDS})


def energy_from_proto(message: pb.PathEnergy) -> PathEnergy:
    return PathEnergy(**{name: getattr(message, name) for name in _ENERGY_FIELDS})


def _entry_from_proto(station_id: str, entry: pb.TableEntry) -> PathState:
    return PathState(
        station_id=station_id,
        satellite_id=entry.satellite_id,
        elevation_deg=entry.elevation_deg,
        azimuth_deg=entry.azimuth_deg,
        range_km=entry.range_km,
        los_in_s=entry.los_in_s,
        link_up=entry.link_up,
        link_delay_s=entry.link_delay_s,
        rate_bps=entry.rate_bps,
        loss_rate=entry.loss_rate,
        liveness=_LIVENESS_FROM_PROTO.get(entry.liveness, Liveness.UNKNOWN),
        models=frozenset(entry.models),
        queue_depth=entry.queue_depth,
        in_flight=entry.in_flight,
        free_slots=entry.free_slots,
        exclusion=_EXCLUSION_FROM_PROTO.get(entry.exclusion),
        exclusion_detail=entry.exclusion_detail,
        energy=energy_from_proto(entry.energy) if entry.HasField("energy") else None,
    )


def table_to_proto(table: RouteTable) -> pb.RouteTable:
    return pb.RouteTable(
        version=table.version,
        computed_at=to_timestamp(table.computed_at),
        policy=policy_to_proto(table.policy),
        known_models=sorted(table.known_models),
        stations=[
            pb.StationRoutes(
                station_id=routes.station.station_id,
                lat_deg=routes.station.lat_deg,
                lon_deg=routes.station.lon_deg,
                entries=[_entry_to_proto(p) for p in routes.paths],
                upcoming=[
                    pb.UpcomingPass(
                        satellite_id=u.satellite_id,
                        aos=to_timestamp(u.aos),
                        los=to_timestamp(u.los),
                        models=sorted(u.models),
                    )
                    for u in routes.upcoming
                ],
            )
            for routes in table.stations
        ],
    )


def table_from_proto(message: pb.RouteTable, backhaul: BackhaulModel | None = None) -> RouteTable:
    """The gateway's side: a streamed table back into a :class:`RouteTable` to decide from."""
    stations = tuple(
        StationRoutes(
            station=StationInfo(s.station_id, s.lat_deg, s.lon_deg),
            paths=tuple(_entry_from_proto(s.station_id, e) for e in s.entries),
            upcoming=tuple(
                UpcomingPass(
                    s.station_id,
                    u.satellite_id,
                    from_timestamp(u.aos),
                    from_timestamp(u.los),
                    frozenset(u.models),
                )
                for u in s.upcoming
            ),
        )
        for s in message.stations
    )
    return RouteTable(
        version=message.version,
        computed_at=from_timestamp(message.computed_at),
        policy=policy_from_proto(message.policy),
        stations=stations,
        known_models=frozenset(message.known_models),
        backhaul=backhaul if backhaul is not None else BackhaulModel(),
    )
