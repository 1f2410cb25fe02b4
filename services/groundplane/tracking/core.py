"""The tracking service's domain facade: catalog, sites and the geometry behind one interface.

:class:`TrackingCore` knows nothing of protobuf or gRPC; the servicer converts messages to the
domain objects used here. Every method that depends on "now" takes it as an argument.

Catalog version: every change made through the core (elements upserted or deleted, a record
enabled or disabled, a site upserted) increments :attr:`TrackingCore.version` and calls the
change listeners (from whichever thread made the change). The version is seeded with the wall
clock in nanoseconds when the core is built, so a follower that saw version ``v`` before a
restart of the service sees a larger one after it (as long as fewer than 10^9 changes a second
were made). The active set also changes without a call when an active record expires:
:meth:`TrackingCore.snapshot` notices that (it compares the active record ids with the last
snapshot's) and increments the version then; :meth:`TrackingCore.next_expiry` tells a watcher
when to look again. Changes made to ``core.catalog`` directly bypass the version (only the
preload in ``build_tracking`` does that, before anyone watches).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from groundplane.kernel.errors import FailedPrecondition, InvalidArgument, NotFound
from groundplane.orbit.elements import ElementSet, canonical_catalog_id
from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.sites import Site
from groundplane.tracking.catalog import (
    AgeVerdict,
    Catalog,
    ElementAgePolicy,
    ElementRecord,
)

if TYPE_CHECKING:  # only an annotation here: sqlite3 stays out of `passes`' start-up
    from groundplane.tracking.store import TrackingStore


@dataclass(frozen=True)
class TrackingSettings:
    """Limits and policies of one tracking service."""

    age_policy: ElementAgePolicy = field(default_factory=ElementAgePolicy)
    max_pass_window_days: float = 14.0
    max_look_angle_points: int = 2_000_000
    min_watch_interval_s: float = 0.05
    max_watch_points: int = 200_000
    pass_stream_batch: int = 500
    max_sites_per_request: int = 1_000
    """Stored plus inline sites one request may name (``SiteSelector``)."""
    max_catalog_ids_per_request: int = 100_000
    """Catalog ids one request may name (a whole large catalog fits)."""
    max_times_per_request: int = 100_000
    """Timestamps one GetLookAngles request may carry."""


@dataclass(frozen=True)
class CatalogSnapshot:
    """The whole catalog state a follower needs at one instant, with its version."""

    version: int
    at: datetime
    records: tuple[ElementRecord, ...]
    """The active record of every satellite that has one at ``at``, in catalog-id order."""
    sites: tuple[Site, ...]
    """Every stored site, by id."""


@dataclass(frozen=True)
class Selection:
    """Satellites chosen for a computation: a batch, their names and age warnings."""

    batch: SatelliteBatch
    names: dict[str, str]
    warnings: tuple[str, ...]


class TrackingCore:
    """Catalog, sites and batch building for the tracking service.

    The propagation batch of the catalog is cached and rebuilt only when the catalog changes
    or a different set of records becomes active.
    """

    def __init__(
        self,
        catalog: Catalog,
        store: TrackingStore | None = None,
        settings: TrackingSettings | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.settings = settings or TrackingSettings()
        self._sites: dict[str, Site] = {}
        if store is not None:
            self._sites = {site.id: site for site in store.list_sites()}
        self._lock = threading.RLock()
        self._cache_key: tuple[str, ...] | None = None
        self._cache: tuple[SatelliteBatch, dict[str, ElementRecord]] | None = None
        self._version = time.time_ns()
        self._snapshot_key: tuple[str, ...] | None = None
        self._snapshot_version = -1
        self._listeners: list[Callable[[int], None]] = []

    # ---------------------------------------------------------------------------- versions

    @property
    def version(self) -> int:
        """The catalog revision: grows with every change (see the module docstring)."""
        with self._lock:
            return self._version

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(version)`` after each change, on the thread that made it."""
        with self._lock:
            self._listeners.append(callback)

    def _changed(self) -> None:
        with self._lock:
            self._version += 1
            version = self._version
            listeners = list(self._listeners)
        for callback in listeners:
            callback(version)

    def snapshot(self, now: datetime) -> CatalogSnapshot:
        """The active records and the sites at ``now``, with the version they belong to.

        When the active records differ from the previous snapshot's without a change having
        been made (a record expired), the version is incremented first.
        """
        records = self.catalog.active_all(now)
        key = tuple(record.record_id for record in records)
        with self._lock:
            if key != self._snapshot_key and self._version == self._snapshot_version:
                self._version += 1  # the active set changed with no change made: an expiry
            self._snapshot_key, self._snapshot_version = key, self._version
            version = self._version
            sites = tuple(self._sites[site_id] for site_id in sorted(self._sites))
        return CatalogSnapshot(version, now, tuple(records), sites)

    def next_expiry(self, now: datetime) -> datetime | None:
        """The first instant after ``now`` at which an enabled record expires (the active set
        may change then), or None."""
        return min(
            (
                record.expires_at
                for record in self.catalog.list(enabled=True)
                if record.expires_at is not None and record.expires_at > now
            ),
            default=None,
        )

    # ---------------------------------------------------------------------------- sites

    def upsert_site(self, site: Site) -> Site:
        with self._lock:
            if self.store is not None:
                self.store.put_site(site)
            self._sites[site.id] = site
        self._changed()
        return site

    def list_sites(self) -> list[Site]:
        with self._lock:
            return [self._sites[key] for key in sorted(self._sites)]

    def resolve_sites(self, site_ids: Sequence[str], inline: Sequence[Site]) -> list[Site]:
        """Stored sites by id followed by ad-hoc ones; at least one site overall."""
        chosen: list[Site] = []
        with self._lock:
            for site_id in site_ids:
                if site_id not in self._sites:
                    raise NotFound(
                        f"no site {site_id!r}; stored sites: {_listing(sorted(self._sites))}"
                    )
                chosen.append(self._sites[site_id])
        chosen.extend(inline)
        if not chosen:
            raise InvalidArgument(
                "expected at least one site: give stored site ids or inline sites, got neither"
            )
        limit = self.settings.max_sites_per_request
        if len(chosen) > limit:
            raise InvalidArgument(
                f"a request may name at most {limit} sites (stored and inline), got {len(chosen)}"
            )
        counts = Counter(site.id for site in chosen)
        duplicates = sorted(i for i, n in counts.items() if n > 1)
        if duplicates:
            raise InvalidArgument(f"site ids must be unique in one request, repeated: {duplicates}")
        return chosen

    # ---------------------------------------------------------------------------- satellites

    def _active_batch(self, now: datetime) -> tuple[SatelliteBatch, dict[str, ElementRecord]]:
        records = self.catalog.active_all(now)
        key = tuple(record.record_id for record in records)
        with self._lock:
            if self._cache is not None and self._cache_key == key:
                return self._cache
        ids = [record.catalog_id for record in records]
        satrecs = [record.elements.to_satrec() for record in records]
        by_id = {record.catalog_id: record for record in records}
        built = (SatelliteBatch(ids, satrecs), by_id)
        with self._lock:
            self._cache_key, self._cache = key, built
        return built

    def select(
        self,
        catalog_ids: Sequence[str],
        now: datetime,
        used: tuple[datetime, datetime] | None = None,
    ) -> Selection:
        """The satellites to compute for: the records active at ``now``, judged for element age
        at the instants they will be used for (``used`` = first and last; ``now`` by default).

        SGP4's error grows with the distance from the epoch to the instant propagated to, not
        with the service's own time, so a window in the elements' own week is served whenever
        it is asked for.

        Named satellites must exist and be plannable (stale ones fail the request with
        FAILED_PRECONDITION). With no names, every active satellite is used and stale ones are
        left out with a warning, so one old element set does not stop a whole-sky query.
        """
        batch, records = self._active_batch(now)
        policy = self.settings.age_policy
        warnings: list[str] = []
        if catalog_ids:
            wanted = [canonical_catalog_id(c) for c in catalog_ids]
            indices: list[int] = []
            for catalog_id in wanted:
                try:
                    index = batch.index_of(catalog_id)
                except NotFound:
                    self.catalog.active(catalog_id, now)  # raises NOT_FOUND or why inactive
                    raise
                indices.append(index)
            chosen = batch.subset(indices)
        else:
            chosen = batch
        instants = used if used is not None else (now,)
        keep: list[int] = []
        for index, catalog_id in enumerate(chosen.ids):
            elements = records[catalog_id].elements
            judgement = max(
                (policy.judge(elements, at) for at in instants), key=lambda j: j.age_days
            )
            if judgement.verdict is AgeVerdict.REFUSE:
                if catalog_ids:
                    raise FailedPrecondition(judgement.message)
                warnings.append(judgement.message)
                continue
            if judgement.verdict is AgeVerdict.WARN:
                warnings.append(judgement.message)
            keep.append(index)
        if len(keep) != len(chosen):
            chosen = chosen.subset(keep)
        names = {i: records[i].elements.name for i in chosen.ids}
        return Selection(chosen, names, tuple(warnings))

    # ---------------------------------------------------------------------------- elements

    def upsert_elements(  # noqa: PLR0913 - the element sets and every catalog column by keyword
        self,
        element_sets: Sequence[ElementSet],
        *,
        source: str,
        priority: int,
        enabled: bool,
        expires_at: datetime | None,
        now: datetime,
    ) -> tuple[list[ElementRecord], list[str]]:
        if not element_sets:
            raise InvalidArgument("expected element text or element sets to upsert, got none")
        records = self.catalog.upsert(
            element_sets, source=source, priority=priority, enabled=enabled, expires_at=expires_at
        )
        self._changed()
        warnings = [
            judgement.message
            for record in records
            if (judgement := self.settings.age_policy.judge(record.elements, now)).verdict
            is not AgeVerdict.OK
        ]
        return records, warnings

    def delete_elements(self, catalog_id: str, record_id: str | None = None) -> int:
        """Delete one record or every record of a satellite; returns how many went."""
        deleted = self.catalog.delete(catalog_id, record_id)
        self._changed()
        return deleted

    def set_enabled(self, catalog_id: str, record_id: str, enabled: bool) -> ElementRecord:
        """Enable or disable one record (a disabled record is never active)."""
        record = self.catalog.set_enabled(catalog_id, record_id, enabled)
        self._changed()
        return record

    def check_window(self, start: datetime, end: datetime) -> None:
        if not start < end:
            raise InvalidArgument(
                f"expected start < end, got start={start.isoformat()} end={end.isoformat()}"
            )
        limit = timedelta(days=self.settings.max_pass_window_days)
        if end - start > limit:
            raise InvalidArgument(
                f"window is {(end - start).total_seconds() / 86400:.2f} days; at most "
                f"{self.settings.max_pass_window_days:g} days per request (split the window)"
            )


SITES_LISTED = 10
"""How many stored site ids a NOT_FOUND message names before "… and N more"."""


def _listing(ids: Sequence[str], limit: int = SITES_LISTED) -> str:
    """``a, b, c`` or ``a, b, … and 3 more``, or ``none``."""
    if not ids:
        return "none"
    shown = ", ".join(ids[:limit])
    rest = len(ids) - limit
    return f"{shown}, … and {rest} more" if rest > 0 else shown
