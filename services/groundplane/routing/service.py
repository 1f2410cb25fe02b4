"""The routing service: keeps the route table fresh and pushes it to watchers.

:class:`RoutingService` owns the inputs of the table (stations, visibility, node snapshot, link
states, pass predictions, policy) and rebuilds it

* on every tick of simulated time (``tick_s``, read from the injected :class:`Clock`): the
  visibility source is sampled again (the expensive part, run in a worker thread);
* whenever a node or a link changes (:meth:`invalidate`, :meth:`update_link`) or the policy
  changes: the table is rebuilt from the last sightings (cheap; geometry keeps its instant, and
  remaining pass times shrink by the table's age at decision time). Such changes are
  **coalesced**: the first one marks the table dirty and the rebuild runs ``coalesce_wall_s``
  wall seconds later (:data:`DEFAULT_COALESCE_WALL_S`, 0.1 s) or at the end of the tick,
  whichever comes first, with every change that arrived meanwhile. A burst (1,584 node births,
  a shard's Will) costs one rebuild per window, not one per message; a node going OFFLINE
  leaves the table within that window plus one build;
* after the same window (not the tick), sampling again, when the catalog changes
  (:meth:`set_catalog`: new stations or satellites from tracking).

Changes arriving together are coalesced into one rebuild. Watchers (:meth:`watch`) always get
the latest table; a slow watcher skips intermediate versions rather than queueing them.

This module also holds the adapters from the other services' outputs to routing's inputs:
:class:`TrackingVisibility` (tracking's ``visibility``), :func:`upcoming_from_passes`
(tracking's passes) and :func:`link_quality_from_proto` (the retained ``LinkState`` on
``gp/v1/link/<station>/<sat>/state``).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

from groundplane.kernel.clock import Clock
from groundplane.kernel.errors import InvalidArgument
from groundplane.link.v1 import link_pb2
from groundplane.orbit.geometry import SatelliteBatch, utc_jd_fr
from groundplane.orbit.passes import Pass
from groundplane.orbit.sites import Site
from groundplane.orbit.visibility import Visibility, visibility
from groundplane.routing.backhaul import BackhaulModel
from groundplane.routing.policy import (
    DEFAULT_POLICY,
    InFlightCounter,
    LinkQuality,
    NodeSnapshotSource,
    RouteDecision,
    RouteRequest,
    RoutingPolicy,
    Sighting,
    StickyMemory,
    VisibilitySource,
)
from groundplane.routing.table import RouteTable, StationInfo, UpcomingPass, build_table

DEFAULT_COALESCE_WALL_S = 0.1
"""Wall seconds a node, link or policy change may wait for others before the table is rebuilt
(at most: the tick's end comes first when it is sooner)."""


class TrackingVisibility:
    """:class:`VisibilitySource` over tracking's vectorised ``visibility`` for fixed inputs."""

    def __init__(
        self, batch: SatelliteBatch, sites: Sequence[Site], max_lookahead_s: float = 86_400.0
    ) -> None:
        self._batch = batch
        self._sites = tuple(sites)
        self._max_lookahead_s = max_lookahead_s
        # The last tick: the next one takes the LOS of the pairs still visible from it (only new
        # passes are swept); ignored when it is not earlier.
        self._previous: Visibility | None = None

    def sightings(self, at: datetime) -> list[Sighting]:
        jd, fr = utc_jd_fr(at)
        seen = visibility(
            self._batch, self._sites, float(jd[0]), float(fr[0]),
            max_lookahead_s=self._max_lookahead_s, previous=self._previous,
        )  # fmt: skip
        self._previous = seen
        sat_ids, site_ids = seen.satellite_ids, seen.site_ids
        return [
            Sighting(
                station_id=site_ids[int(site)],
                satellite_id=sat_ids[int(sat)],
                elevation_deg=float(el),
                azimuth_deg=float(az),
                range_km=float(rng),
                remaining_s=float(los),
            )
            for sat, site, el, az, rng, los in zip(
                seen.sat_index,
                seen.site_index,
                seen.elevation_deg,
                seen.azimuth_deg,
                seen.range_km,
                seen.los_in_s,
                strict=True,
            )
        ]


def stations_from_sites(sites: Iterable[Site]) -> list[StationInfo]:
    return [StationInfo(s.id, s.lat_deg, s.lon_deg) for s in sites]


def upcoming_from_passes(passes: Iterable[Pass]) -> list[UpcomingPass]:
    """Tracking passes as upcoming passes (models are filled from the node snapshot)."""
    return [UpcomingPass(p.site_id, p.catalog_id, p.aos, p.los) for p in passes]


def link_quality_from_proto(state: link_pb2.LinkState) -> LinkQuality:
    """A retained ``LinkState`` (ground link) as routing's :class:`LinkQuality`."""
    if not state.station_id or not state.satellite_id:
        raise InvalidArgument(
            f"link state must name station_id and satellite_id, got "
            f"{state.station_id!r}/{state.satellite_id!r}"
        )
    return LinkQuality(
        station_id=state.station_id,
        satellite_id=state.satellite_id,
        up=state.up,
        delay_s=state.delay_s,
        rate_bps=state.rate_bps if state.rate_bps > 0 else math.inf,
        loss_rate=state.loss_rate,
    )


class RoutingService:
    """Route table owner: rebuilds on ticks and changes, serves decisions and table watchers."""

    def __init__(  # noqa: PLR0913 - every source and tunable by keyword
        self,
        *,
        clock: Clock,
        stations: Sequence[StationInfo],
        visibility: VisibilitySource,
        nodes: NodeSnapshotSource,
        policy: RoutingPolicy = DEFAULT_POLICY,
        tick_s: float = 1.0,
        backhaul: BackhaulModel | None = None,
        upcoming: Iterable[UpcomingPass] = (),
        coalesce_wall_s: float = DEFAULT_COALESCE_WALL_S,
    ) -> None:
        if not (math.isfinite(tick_s) and tick_s > 0):
            raise InvalidArgument(f"tick_s must be a positive number of seconds, got {tick_s!r}")
        if not (math.isfinite(coalesce_wall_s) and coalesce_wall_s >= 0):
            raise InvalidArgument(
                f"coalesce_wall_s must be zero or positive wall seconds, got {coalesce_wall_s!r}"
            )
        self._coalesce_wall_s = float(coalesce_wall_s)
        self._clock = clock
        self._stations = tuple(stations)
        self._visibility = visibility
        self._nodes = nodes
        self._policy = policy
        self._tick_s = float(tick_s)
        self._backhaul = backhaul if backhaul is not None else BackhaulModel()
        self._upcoming = tuple(upcoming)
        self._links: dict[tuple[str, str], LinkQuality] = {}
        self._sightings: tuple[Sighting, ...] | None = None
        self._sampled_at: datetime | None = None
        self._table: RouteTable | None = None
        self._version = 0
        self._changed = asyncio.Condition()
        self._dirty = asyncio.Event()
        # One refresh at a time: a policy change and a tick must not build the same version
        # twice, nor publish an older table over a newer one.
        self._refreshing = asyncio.Lock()
        self._resample_due = False
        self.memory = StickyMemory()
        self.in_flight = InFlightCounter()

    # ---------------------------------------------------------------- inputs

    @property
    def policy(self) -> RoutingPolicy:
        return self._policy

    def set_policy(self, policy: RoutingPolicy) -> None:
        self._policy = policy
        self._dirty.set()

    def update_link(self, link: LinkQuality) -> None:
        """A link's retained state arrived (or changed)."""
        key = (link.station_id, link.satellite_id)
        if self._links.get(key) != link:
            self._links[key] = link
            self._dirty.set()

    def set_upcoming(self, upcoming: Iterable[UpcomingPass]) -> None:
        """Replace the pass predictions used for the next opportunity."""
        self._upcoming = tuple(upcoming)
        self._dirty.set()

    def set_catalog(self, stations: Sequence[StationInfo], visibility: VisibilitySource) -> None:
        """New stations and satellites (tracking's catalog changed): the next refresh (after the
        coalescing window, not the tick) samples the new visibility instead of reusing the last
        sightings."""
        self._stations = tuple(stations)
        self._visibility = visibility
        self._resample_due = True
        self._dirty.set()

    def invalidate(self) -> None:
        """A node changed (liveness or load): rebuild the table soon from the last sightings."""
        self._dirty.set()

    # ---------------------------------------------------------------- table

    @property
    def table(self) -> RouteTable | None:
        """The latest table (``None`` before the first refresh)."""
        return self._table

    async def _build(self, sightings: Sequence[Sighting], at: datetime) -> RouteTable:
        # Inputs are copied on the event loop (they change there); the build itself runs in a
        # worker thread so a large table does not stall the loop's other work.
        return await asyncio.to_thread(
            functools.partial(
                build_table,
                version=self._version + 1,
                computed_at=at,
                stations=self._stations,
                sightings=sightings,
                links=dict(self._links),
                nodes=dict(self._nodes.snapshot()),
                policy=self._policy,
                upcoming=self._upcoming,
                backhaul=self._backhaul,
            )
        )

    async def refresh(self, *, resample: bool = True) -> RouteTable:
        """Rebuild the table now (sampling visibility again unless ``resample`` is false)."""
        async with self._refreshing:
            self._dirty.clear()
            if (
                resample
                or self._resample_due
                or self._sightings is None
                or self._sampled_at is None
            ):
                self._resample_due = False
                at = self._clock.now()
                sightings = tuple(await asyncio.to_thread(self._visibility.sightings, at))
                self._sightings, self._sampled_at = sightings, at
            table = await self._build(self._sightings, self._sampled_at)
            await self._publish(table)
            return table

    async def _publish(self, table: RouteTable) -> None:
        async with self._changed:
            self._version = table.version
            self._table = table
            self._changed.notify_all()

    async def current_table(self) -> RouteTable:
        """The latest table, building the first one if none exists yet."""
        if self._table is None:
            return await self.refresh()
        return self._table

    async def run(self) -> None:
        """Refresh on every tick of simulated time and after changes (coalesced: see the module
        docstring), until cancelled."""
        while True:
            await self.refresh(resample=True)
            tick_ends = self._clock.monotonic() + self._tick_s / self._clock.speed
            while (left_wall_s := tick_ends - self._clock.monotonic()) > 0:
                try:
                    async with asyncio.timeout(left_wall_s):
                        await self._dirty.wait()
                except TimeoutError:
                    break
                # Level-triggered: the table stays dirty while more changes arrive; one rebuild
                # takes them all, at most a window (or the rest of the tick) later.
                window_wall_s = min(self._coalesce_wall_s, left_wall_s)
                if window_wall_s > 0:
                    await self._clock.sleep(window_wall_s * self._clock.speed)
                if self._clock.monotonic() >= tick_ends:
                    break  # the tick's own refresh (sampling again) takes the changes
                await self.refresh(resample=False)

    async def watch(self) -> AsyncIterator[RouteTable]:
        """The current table, then every newer one (the latest only, never a backlog)."""
        table = await self.current_table()
        while True:
            yield table
            seen = table.version
            async with self._changed:
                while self._version <= seen:
                    await self._changed.wait()
                latest = self._table
            assert latest is not None
            table = latest

    # ---------------------------------------------------------------- decisions

    async def route(self, request: RouteRequest, now: datetime | None = None) -> RouteDecision:
        """One decision from the current table, with the service's own stickiness memory."""
        table = await self.current_table()
        at = self._clock.now() if now is None else now
        return table.decide(request, at, local_in_flight=self.in_flight, memory=self.memory)
