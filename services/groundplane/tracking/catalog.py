"""The element catalog: several element sets per satellite, and which one is in force.

Each satellite (catalog id) holds any number of :class:`ElementRecord` s — element sets from
different sources and epochs, each with a priority, an enabled flag and an optional expiry. The
*active* record at an instant ``now`` is, among the enabled records not expired at ``now``, the
one with the highest priority, and among equal priorities the newest epoch. ``now`` is always
passed in; nothing here reads the clock.

A record is identified by ``(catalog_id, source, epoch)``: upserting the same triple again
replaces the record (new elements, priority, flags) instead of adding a duplicate. Its
``record_id`` is derived from that triple, so it is stable across restarts and stores.

The catalog lives in memory. Given a :class:`~groundplane.tracking.store.TrackingStore` it
writes every change through to it, and :meth:`Catalog.load` rebuilds it after a restart.

Element age: SGP4 errors grow with distance from the epoch (roughly a kilometre a day in low
orbit, more under strong drag). :class:`ElementAgePolicy` judges the age of a record at a
given instant; :func:`require_plannable` refuses planning with stale elements.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING

from groundplane.kernel.errors import FailedPrecondition, InvalidArgument, NotFound
from groundplane.orbit.elements import ElementSet, canonical_catalog_id

if TYPE_CHECKING:
    from groundplane.tracking.store import TrackingStore

SECONDS_PER_DAY = 86_400.0
DEFAULT_SOURCE = "manual"


def _aware(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidArgument(
            f"{name} must be a timezone-aware UTC datetime (e.g. 2026-08-15T00:00:00Z), "
            f"got {value!r}"
        )
    return value.astimezone(UTC)


def record_id_for(catalog_id: str, source: str, epoch: datetime) -> str:
    """The stable id of the record ``(catalog_id, source, epoch)``: 16 hex digits."""
    key = f"{catalog_id}\x1f{source}\x1f{epoch.astimezone(UTC).isoformat()}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class ElementRecord:
    """One element set in the catalog, with where it came from and how it ranks.

    ``source`` names the origin (``"celestrak"``, ``"space-track"``, ``"operator"``, a file
    name); ``priority`` ranks sources (higher wins); a disabled record is never active; a
    record with ``expires_at`` stops being active at that instant. ``record_id`` is derived
    from ``(catalog_id, source, epoch)`` (see :func:`record_id_for`).
    """

    elements: ElementSet
    source: str = DEFAULT_SOURCE
    priority: int = 0
    enabled: bool = True
    expires_at: datetime | None = None
    record_id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.elements, ElementSet):
            raise InvalidArgument(
                f"expected an ElementSet for the record, got {type(self.elements).__name__}"
            )
        if not isinstance(self.source, str) or not self.source.strip():
            raise InvalidArgument(
                f"record source must be a non-empty name such as 'celestrak', got {self.source!r}"
            )
        if not self.source.isprintable() or len(self.source) > 200:
            raise InvalidArgument(
                f"record source must be printable text of at most 200 characters, got "
                f"{self.source!r}"
            )
        object.__setattr__(self, "source", self.source.strip())
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise InvalidArgument(f"record priority must be an integer, got {self.priority!r}")
        if not isinstance(self.enabled, bool):
            raise InvalidArgument(f"record enabled must be true or false, got {self.enabled!r}")
        if self.expires_at is not None:
            object.__setattr__(self, "expires_at", _aware("expires_at", self.expires_at))
        expected = record_id_for(self.elements.catalog_id, self.source, self.elements.epoch)
        if self.record_id and self.record_id != expected:
            raise InvalidArgument(
                f"record_id {self.record_id!r} does not belong to ({self.catalog_id!r}, "
                f"{self.source!r}, {self.epoch.isoformat()}); expected {expected!r} or empty"
            )
        object.__setattr__(self, "record_id", expected)

    @property
    def catalog_id(self) -> str:
        return self.elements.catalog_id

    @property
    def epoch(self) -> datetime:
        return self.elements.epoch

    def usable_at(self, now: datetime) -> bool:
        """Enabled and not expired at ``now``."""
        return self.enabled and (self.expires_at is None or now < self.expires_at)


MAX_ELEMENT_AGE_FLAG = "--max-element-age-days"
"""The command-line flag that sets :attr:`ElementAgePolicy.refuse_after_days`."""


class AgeVerdict(Enum):
    OK = "ok"
    WARN = "warn"
    REFUSE = "refuse"


@dataclass(frozen=True)
class AgeJudgement:
    """The verdict on an element set's age at an instant, with a message that explains it."""

    verdict: AgeVerdict
    age_days: float
    message: str


@dataclass(frozen=True)
class ElementAgePolicy:
    """How old elements may be: warn after ``warn_after_days``, refuse after ``refuse_after_days``.

    Age is the distance in days between the epoch and the instant judged, in either direction
    (propagating backwards is as uncertain as forwards).
    """

    warn_after_days: float = 3.0
    refuse_after_days: float = 14.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warn_after_days <= self.refuse_after_days:
            raise InvalidArgument(
                "element age policy needs 0 <= warn_after_days <= refuse_after_days, got "
                f"warn_after_days={self.warn_after_days}, "
                f"refuse_after_days={self.refuse_after_days}"
            )

    def judge(self, elements: ElementSet, at: datetime) -> AgeJudgement:
        """The verdict on ``elements`` used at the instant ``at``."""
        at = _aware("at", at)
        age_days = abs((at - elements.epoch).total_seconds()) / SECONDS_PER_DAY
        direction = "old" if at >= elements.epoch else "ahead of their epoch"
        label = f"elements of {elements.catalog_id}" + (
            f" ({elements.name})" if elements.name else ""
        )
        stamp = (
            f"epoch {elements.epoch.isoformat().replace('+00:00', 'Z')}, "
            f"judged at {at.isoformat().replace('+00:00', 'Z')}"
        )
        if age_days > self.refuse_after_days:
            return AgeJudgement(
                AgeVerdict.REFUSE,
                age_days,
                f"{label} are {age_days:.1f} days {direction} ({stamp}); planning is refused "
                f"beyond {self.refuse_after_days:g} days because SGP4 position errors grow to "
                "many kilometres; ingest fresher elements (e.g. from CelesTrak or Space-Track) "
                f"or allow older ones with {MAX_ELEMENT_AGE_FLAG} DAYS (groundplane passes, look, "
                "hil and serve tracking take it)",
            )
        if age_days > self.warn_after_days:
            return AgeJudgement(
                AgeVerdict.WARN,
                age_days,
                f"{label} are {age_days:.1f} days {direction} ({stamp}); beyond "
                f"{self.warn_after_days:g} days expect kilometre-level position errors and "
                "pass times off by seconds; fresher elements are advised",
            )
        return AgeJudgement(
            AgeVerdict.OK,
            age_days,
            f"{label} are {age_days:.2f} days {direction} ({stamp}); within "
            f"{self.warn_after_days:g} days",
        )


DEFAULT_AGE_POLICY = ElementAgePolicy()


def require_plannable(
    elements: ElementSet | ElementRecord,
    now: datetime,
    policy: ElementAgePolicy = DEFAULT_AGE_POLICY,
    *,
    until: datetime | None = None,
) -> AgeJudgement:
    """Judge ``elements`` for planning from ``now`` (to ``until``); raise if refused.

    The worse of the two ends counts. Returns the judgement (``OK`` or ``WARN``, whose message
    callers may log or pass on); raises :class:`FailedPrecondition` with the teaching message
    when the verdict is ``REFUSE``.
    """
    element_set = elements.elements if isinstance(elements, ElementRecord) else elements
    judgement = policy.judge(element_set, now)
    if until is not None:
        later = policy.judge(element_set, until)
        if later.age_days > judgement.age_days:
            judgement = later
    if judgement.verdict is AgeVerdict.REFUSE:
        raise FailedPrecondition(judgement.message)
    return judgement


class Catalog:
    """Element records by catalog id, in memory, optionally written through to a store.

    Thread-safe: every method holds the catalog's lock. Ids passed in are canonicalised
    (``"A0001"`` and ``"100001"`` name the same satellite).
    """

    def __init__(
        self,
        records: Iterable[ElementRecord] = (),
        *,
        store: TrackingStore | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._by_id: dict[str, dict[str, ElementRecord]] = {}
        self._store = store
        for record in records:
            self._put(record)
        if store is not None and self._by_id:
            store.put_records(self._all())

    @classmethod
    def load(cls, store: TrackingStore) -> Catalog:
        """The catalog saved in ``store``, writing later changes back to it."""
        catalog = cls(store=None)
        for record in store.load_records():
            catalog._put(record)
        catalog._store = store
        return catalog

    # ---------------------------------------------------------------------------- internals

    def _put(self, record: ElementRecord) -> None:
        self._by_id.setdefault(record.catalog_id, {})[record.record_id] = record

    def _all(self) -> builtins.list[ElementRecord]:
        return [
            record
            for catalog_id in sorted(self._by_id)
            for record in sorted(self._by_id[catalog_id].values(), key=_record_order)
        ]

    def _records_of(self, catalog_id: str) -> dict[str, ElementRecord]:
        key = canonical_catalog_id(catalog_id)
        records = self._by_id.get(key)
        if not records:
            raise NotFound(
                f"no element sets for catalog id {key!r}"
                + (f" (given as {catalog_id!r})" if key != catalog_id else "")
                + f"; the catalog holds {len(self._by_id)} satellites — ingest elements first"
            )
        return records

    # ---------------------------------------------------------------------------- writes

    def upsert(
        self,
        items: Iterable[ElementRecord | ElementSet],
        *,
        source: str = DEFAULT_SOURCE,
        priority: int = 0,
        enabled: bool = True,
        expires_at: datetime | None = None,
    ) -> builtins.list[ElementRecord]:
        """Add or replace records; returns the records as stored, in input order.

        Plain element sets are wrapped with the keyword metadata; records keep their own.
        A record with the same ``(catalog_id, source, epoch)`` as a stored one replaces it.
        """
        records = [
            item
            if isinstance(item, ElementRecord)
            else ElementRecord(
                item, source=source, priority=priority, enabled=enabled, expires_at=expires_at
            )
            for item in items
        ]
        with self._lock:
            if self._store is not None and records:
                self._store.put_records(records)
            for record in records:
                self._put(record)
        return records

    def set_enabled(self, catalog_id: str, record_id: str, enabled: bool) -> ElementRecord:
        """Enable or disable one record; returns the updated record."""
        with self._lock:
            record = self.record(catalog_id, record_id)
            updated = replace(record, enabled=enabled)
            if self._store is not None:
                self._store.put_records([updated])
            self._put(updated)
            return updated

    def delete(self, catalog_id: str, record_id: str | None = None) -> int:
        """Delete one record, or every record of ``catalog_id``; returns how many went.

        Raises :class:`NotFound` for an unknown catalog id or record id.
        """
        with self._lock:
            records = self._records_of(catalog_id)
            key = canonical_catalog_id(catalog_id)
            if record_id is None:
                removed = len(records)
                if self._store is not None:
                    self._store.delete_records(key)
                del self._by_id[key]
                return removed
            if record_id not in records:
                raise NotFound(
                    f"catalog id {key!r} has no record {record_id!r}; its records are "
                    f"{', '.join(sorted(records))}"
                )
            if self._store is not None:
                self._store.delete_records(key, record_id)
            del records[record_id]
            if not records:
                del self._by_id[key]
            return 1

    # ---------------------------------------------------------------------------- reads

    def __len__(self) -> int:
        """Number of satellites (catalog ids) with at least one record."""
        with self._lock:
            return len(self._by_id)

    def __contains__(self, catalog_id: object) -> bool:
        if not isinstance(catalog_id, str):
            return False
        try:
            key = canonical_catalog_id(catalog_id)
        except InvalidArgument:
            return False
        with self._lock:
            return key in self._by_id

    def catalog_ids(self) -> builtins.list[str]:
        """Every catalog id with records, sorted (numbers numerically, then other ids)."""
        with self._lock:
            return sorted(self._by_id, key=_id_order)

    def list(
        self, *, prefix: str = "", enabled: bool | None = None
    ) -> builtins.list[ElementRecord]:
        """Records whose catalog id starts with ``prefix`` (and with ``enabled`` if given).

        Ordered by catalog id, then priority (highest first), then epoch (newest first).
        """
        with self._lock:
            return [
                record
                for catalog_id in sorted(self._by_id, key=_id_order)
                if catalog_id.startswith(prefix)
                for record in sorted(self._by_id[catalog_id].values(), key=_record_order)
                if enabled is None or record.enabled is enabled
            ]

    def get(self, catalog_id: str) -> builtins.list[ElementRecord]:
        """All records of ``catalog_id`` (best first); :class:`NotFound` if there are none."""
        with self._lock:
            return sorted(self._records_of(catalog_id).values(), key=_record_order)

    def record(self, catalog_id: str, record_id: str) -> ElementRecord:
        """One record by its ids; :class:`NotFound` if either is unknown."""
        with self._lock:
            records = self._records_of(catalog_id)
            if record_id not in records:
                raise NotFound(
                    f"catalog id {canonical_catalog_id(catalog_id)!r} has no record "
                    f"{record_id!r}; its records are {', '.join(sorted(records))}"
                )
            return records[record_id]

    def active(self, catalog_id: str, now: datetime) -> ElementRecord:
        """The record in force for ``catalog_id`` at ``now``.

        Raises :class:`NotFound` for an unknown id and :class:`FailedPrecondition` when every
        record is disabled or expired at ``now``.
        """
        now = _aware("now", now)
        with self._lock:
            records = builtins.list(self._records_of(catalog_id).values())
        best = _best(records, now)
        if best is None:
            disabled = sum(1 for r in records if not r.enabled)
            expired = [r for r in records if r.enabled and not r.usable_at(now)]
            latest = max((r.expires_at for r in expired if r.expires_at), default=None)
            raise FailedPrecondition(
                f"catalog id {records[0].catalog_id!r} has {len(records)} element set(s) but none "
                f"is usable at {now.isoformat()}: {disabled} disabled, {len(expired)} expired"
                + (f" (latest expiry {latest.isoformat()})" if latest else "")
                + "; enable a record or ingest fresh elements"
            )
        return best

    def active_all(self, now: datetime) -> builtins.list[ElementRecord]:
        """The active record of every satellite that has one at ``now``, by catalog id.

        Satellites whose records are all disabled or expired are left out. The elements of
        the result build a propagation batch (``[r.elements.to_satrec() for r in …]``).
        """
        now = _aware("now", now)
        with self._lock:
            groups = [
                builtins.list(self._by_id[catalog_id].values())
                for catalog_id in sorted(self._by_id, key=_id_order)
            ]
        return [best for records in groups if (best := _best(records, now)) is not None]


def _best(records: Iterable[ElementRecord], now: datetime) -> ElementRecord | None:
    usable = [record for record in records if record.usable_at(now)]
    if not usable:
        return None
    return max(usable, key=lambda record: (record.priority, record.epoch, record.source))


def _record_order(record: ElementRecord) -> tuple[int, float, str]:
    return -record.priority, -record.epoch.timestamp(), record.source


def _id_order(catalog_id: str) -> tuple[int, int, str]:
    if catalog_id.isascii() and catalog_id.isdigit():
        return 0, int(catalog_id), ""
    return 1, 0, catalog_id
