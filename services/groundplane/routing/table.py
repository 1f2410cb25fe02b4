"""The route table: everything a request-time decision needs, precomputed once per tick.

The routing service builds a :class:`RouteTable` on every tick of simulated time and whenever a
node or a link changes, and streams it to gateways. A gateway keeps the latest table and decides
each request locally with :meth:`RouteTable.decide`; no call per request leaves the process.

Layout, chosen so the per-request work is small:

* per station, the visible paths (:class:`~groundplane.routing.policy.PathState`), already
  joined with link and node state and with the request-independent filters applied (elevation
  threshold, link down, loss, node offline/unknown);
* the stations' unit vectors in one ``(N, 3)`` array, so a user's reachable stations are one
  vectorised distance computation (cached per user position, which rarely changes);
* per station a few upcoming passes, for the next opportunity when nothing is usable now.

A decision is then: reachable stations (cached) → their paths (a few dozen) → the request
filters (model, pass long enough) → score → sort → stickiness. Remaining pass times are kept
relative to ``computed_at`` and shortened by the table's age at decision time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from groundplane.kernel.errors import InvalidArgument, NotFound
from groundplane.routing.backhaul import (
    BackhaulModel,
    FloatArray,
    StationAccess,
    check_lat_lon,
    great_circle_km_many,
    unit_vectors,
)
from groundplane.routing.policy import (
    Assignment,
    LinkQuality,
    NodeState,
    PathState,
    RouteDecision,
    RouteRequest,
    RoutingPolicy,
    Sighting,
    StickyMemory,
    build_path,
    decide,
    next_assignment,
)

MAX_UPCOMING_PER_STATION = 16
_ACCESS_CACHE_SIZE = 65_536


@dataclass(frozen=True, slots=True)
class StationInfo:
    """A ground station as routing needs it: where it is (users reach it over backhaul)."""

    station_id: str
    lat_deg: float
    lon_deg: float

    def __post_init__(self) -> None:
        if not self.station_id:
            raise InvalidArgument("station_id must be a non-empty string")
        lat, lon = check_lat_lon(self.lat_deg, self.lon_deg, f"station {self.station_id!r}")
        object.__setattr__(self, "lat_deg", lat)
        object.__setattr__(self, "lon_deg", lon)


@dataclass(frozen=True, slots=True)
class UpcomingPass:
    """A pass that has not started yet, with the models its node serves (if known)."""

    station_id: str
    satellite_id: str
    aos: datetime
    los: datetime
    models: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class StationRoutes:
    station: StationInfo
    paths: tuple[PathState, ...]
    upcoming: tuple[UpcomingPass, ...] = ()


@dataclass(eq=False)
class RouteTable:
    """An immutable snapshot of routes; :meth:`decide` answers one request locally."""

    version: int
    computed_at: datetime
    policy: RoutingPolicy
    stations: tuple[StationRoutes, ...]
    known_models: frozenset[str]
    backhaul: BackhaulModel = field(default_factory=BackhaulModel)
    _by_id: dict[str, StationRoutes] = field(init=False, repr=False)
    _units: FloatArray = field(init=False, repr=False)
    _access_cache: dict[tuple[float, float], tuple[StationAccess, ...]] = field(
        init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._by_id = {s.station.station_id: s for s in self.stations}
        if len(self._by_id) != len(self.stations):
            raise InvalidArgument("route table: station ids must be unique")
        lat = np.array([s.station.lat_deg for s in self.stations], dtype=np.float64)
        lon = np.array([s.station.lon_deg for s in self.stations], dtype=np.float64)
        self._units = unit_vectors(lat, lon).reshape(len(self.stations), 3)
        self._access_cache = {}

    def station(self, station_id: str) -> StationRoutes:
        found = self._by_id.get(station_id)
        if found is None:
            known = ", ".join(sorted(self._by_id)[:10]) or "none"
            raise NotFound(
                f"ground station {station_id!r} is not in the route table (known: {known})"
            )
        return found

    def path_count(self) -> int:
        return sum(len(s.paths) for s in self.stations)

    def access(self, request: RouteRequest) -> tuple[StationAccess, ...]:
        """Stations the user reaches, nearest first, within the policy's reach and count.

        A user terminal is itself a station: it reaches only itself, with no backhaul.
        """
        if request.terminal_site_id:
            self.station(request.terminal_site_id)
            return (StationAccess(request.terminal_site_id, 0.0, 0.0),)
        key = (request.lat_deg, request.lon_deg)
        cached = self._access_cache.get(key)
        if cached is not None:
            return cached
        found: tuple[StationAccess, ...] = ()
        if self.stations:
            distance_km = great_circle_km_many(request.lat_deg, request.lon_deg, self._units)
            order = np.argsort(distance_km, kind="stable")[: self.policy.max_stations]
            found = tuple(
                StationAccess(
                    self.stations[int(i)].station.station_id,
                    float(distance_km[i]),
                    self.backhaul.delay_s(float(distance_km[i])),
                )
                for i in order
                if distance_km[i] <= self.policy.max_backhaul_km
            )
        if len(self._access_cache) >= _ACCESS_CACHE_SIZE:
            self._access_cache.clear()
        self._access_cache[key] = found
        return found

    def next_opportunity(
        self, accesses: Iterable[StationAccess], model: str, expected_s: float, now: datetime
    ) -> datetime | None:
        """The earliest upcoming AOS at a reachable station of a pass that could serve."""
        best: datetime | None = None
        for access in accesses:
            for upcoming in self._by_id[access.station_id].upcoming:
                if upcoming.aos <= now or model not in upcoming.models:
                    continue
                if (upcoming.los - upcoming.aos).total_seconds() < expected_s:
                    continue
                if best is None or upcoming.aos < best:
                    best = upcoming.aos
                break  # upcoming passes are sorted by AOS: the first match is the earliest
        return best

    def decide(
        self,
        request: RouteRequest,
        now: datetime,
        *,
        local_in_flight: Mapping[str, int] | None = None,
        memory: StickyMemory | None = None,
    ) -> RouteDecision:
        """One routing decision, computed locally from this table.

        Raises :class:`NotFound` for a model no known node serves or an unknown terminal site.
        With ``memory`` and a session key, stickiness reads and updates the session's assignment.
        An empty fallback list carries the next opportunity; ``decision.require()`` turns it into
        :class:`~groundplane.kernel.errors.Unavailable`.
        """
        if request.model not in self.known_models:
            known = ", ".join(sorted(self.known_models)) or "none"
            raise NotFound(
                f"model {request.model!r} is not served by any known node (known models: {known})"
            )
        accesses = self.access(request)
        current: Assignment | None = None
        key = request.session_key
        if memory is not None and key:
            current = memory.get(key)
        if not accesses:
            decision = RouteDecision(
                decided_at=now,
                ranked=(),
                excluded=(),
                summary=self._unreachable_summary(request),
                table_version=self.version,
            )
        else:
            paths = [(a, p) for a in accesses for p in self._by_id[a.station_id].paths]
            decision = decide(
                paths,
                request,
                self.policy,
                now,
                elapsed_s=(now - self.computed_at).total_seconds(),
                local_in_flight=local_in_flight,
                current=current,
                table_version=self.version,
            )
            if not decision.ranked:
                upcoming = self.next_opportunity(
                    accesses, request.model, request.expected_duration_s, now
                )
                if upcoming is not None:
                    decision = replace(
                        decision,
                        next_opportunity=upcoming,
                        summary=f"{decision.summary}; next opportunity at {upcoming.isoformat()}",
                    )
        if memory is not None and key:
            memory.put(key, next_assignment(decision, current, now))
        return decision

    def _unreachable_summary(self, request: RouteRequest) -> str:
        where = f"({request.lat_deg:.3f}, {request.lon_deg:.3f})"
        if not self.stations:
            return f"no ground station is known; cannot route a user at {where}"
        distance_km = great_circle_km_many(request.lat_deg, request.lon_deg, self._units)
        nearest = int(np.argmin(distance_km))
        return (
            f"no ground station within {self.policy.max_backhaul_km:.0f} km of the user at "
            f"{where}: the nearest, {self.stations[nearest].station.station_id}, is "
            f"{float(distance_km[nearest]):.0f} km away"
        )


def build_table(  # noqa: PLR0913 - pure join: every input explicit, all keywords
    *,
    version: int,
    computed_at: datetime,
    stations: Sequence[StationInfo],
    sightings: Iterable[Sighting],
    links: Mapping[tuple[str, str], LinkQuality],
    nodes: Mapping[str, NodeState],
    policy: RoutingPolicy,
    upcoming: Iterable[UpcomingPass] = (),
    backhaul: BackhaulModel | None = None,
    max_upcoming_per_station: int = MAX_UPCOMING_PER_STATION,
) -> RouteTable:
    """Join sightings with link and node state into a :class:`RouteTable` (pure).

    Sightings of stations not in ``stations`` are ignored. Paths are sorted by satellite id and
    upcoming passes by AOS (only those after ``computed_at``, at most
    ``max_upcoming_per_station`` per station), so equal inputs give equal tables.
    """
    known = {s.station_id for s in stations}
    by_station: dict[str, list[PathState]] = defaultdict(list)
    for sighting in sightings:
        if sighting.station_id not in known:
            continue
        link = links.get((sighting.station_id, sighting.satellite_id))
        node = nodes.get(sighting.satellite_id)
        by_station[sighting.station_id].append(build_path(sighting, link, node, policy))
    soon: dict[str, list[UpcomingPass]] = defaultdict(list)
    for item in upcoming:
        if item.station_id in known and item.aos > computed_at:
            owner = nodes.get(item.satellite_id)
            models = owner.models if owner is not None else item.models
            soon[item.station_id].append(
                UpcomingPass(item.station_id, item.satellite_id, item.aos, item.los, models)
            )
    routes = tuple(
        StationRoutes(
            station=station,
            paths=tuple(sorted(by_station[station.station_id], key=lambda p: p.satellite_id)),
            upcoming=tuple(
                sorted(soon[station.station_id], key=lambda u: (u.aos, u.satellite_id))[
                    :max_upcoming_per_station
                ]
            ),
        )
        for station in stations
    )
    served: set[str] = set()
    for state in nodes.values():
        served.update(state.models)
    return RouteTable(
        version=version,
        computed_at=computed_at,
        policy=policy,
        stations=routes,
        known_models=frozenset(served),
        backhaul=backhaul if backhaul is not None else BackhaulModel(),
    )
