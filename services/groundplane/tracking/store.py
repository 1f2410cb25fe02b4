"""Persistence of the tracking service's state: element records and ground sites, in SQLite.

One database file (or ``":memory:"``) holds three kinds of table:

- ``schema_version``: one row, the schema version this file was written with;
- ``element_records``: one row per catalog record (element set + source, priority, enabled,
  expiry), keyed by ``record_id`` and unique on ``(catalog_id, source, epoch)``;
- ``sites`` and ``site_mask_points``: ground sites and their horizon masks.

The SQL is kept portable for a later PostgreSQL backend: ``TEXT``, ``INTEGER`` and ``DOUBLE
PRECISION`` columns only (double precision keeps every float exactly), instants as ISO-8601 UTC
text with microseconds (``2024-05-09T08:48:19.938816Z``, which sorts as time does), booleans as
0/1, upserts as ``INSERT … ON CONFLICT … DO UPDATE``. Placeholders are ``?`` (SQLite's style)
and live only in this module. The file runs in WAL mode so readers do not block the writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from groundplane.kernel.errors import FailedPrecondition, InvalidArgument, NotFound
from groundplane.orbit.elements import ElementSet, canonical_catalog_id
from groundplane.orbit.sites import HorizonMask, Site
from groundplane.tracking.catalog import ElementRecord

#: The schema version this code writes; older files are migrated on open.
SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE element_records (
            record_id TEXT PRIMARY KEY,
            catalog_id TEXT NOT NULL,
            source TEXT NOT NULL,
            epoch TEXT NOT NULL,
            priority INTEGER NOT NULL,
            enabled INTEGER NOT NULL,
            expires_at TEXT,
            name TEXT NOT NULL,
            mean_motion_rev_per_day DOUBLE PRECISION NOT NULL,
            eccentricity DOUBLE PRECISION NOT NULL,
            inclination_deg DOUBLE PRECISION NOT NULL,
            raan_deg DOUBLE PRECISION NOT NULL,
            arg_of_pericenter_deg DOUBLE PRECISION NOT NULL,
            mean_anomaly_deg DOUBLE PRECISION NOT NULL,
            bstar DOUBLE PRECISION NOT NULL,
            mean_motion_dot DOUBLE PRECISION NOT NULL,
            mean_motion_ddot DOUBLE PRECISION NOT NULL,
            classification TEXT NOT NULL,
            intl_designator TEXT NOT NULL,
            element_set_no INTEGER NOT NULL,
            rev_at_epoch INTEGER NOT NULL,
            ephemeris_type INTEGER NOT NULL,
            UNIQUE (catalog_id, source, epoch)
        )""",
        "CREATE INDEX element_records_by_catalog_id ON element_records (catalog_id)",
        """CREATE TABLE sites (
            site_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            lat_deg DOUBLE PRECISION NOT NULL,
            lon_deg DOUBLE PRECISION NOT NULL,
            alt_m DOUBLE PRECISION NOT NULL,
            min_elevation_deg DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE site_mask_points (
            site_id TEXT NOT NULL,
            azimuth_deg DOUBLE PRECISION NOT NULL,
            elevation_deg DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (site_id, azimuth_deg)
        )""",
    ),
}

_ELEMENT_COLUMNS = (
    "name",
    "mean_motion_rev_per_day",
    "eccentricity",
    "inclination_deg",
    "raan_deg",
    "arg_of_pericenter_deg",
    "mean_anomaly_deg",
    "bstar",
    "mean_motion_dot",
    "mean_motion_ddot",
    "classification",
    "intl_designator",
    "element_set_no",
    "rev_at_epoch",
    "ephemeris_type",
)
_RECORD_COLUMNS = (
    "record_id",
    "catalog_id",
    "source",
    "epoch",
    "priority",
    "enabled",
    "expires_at",
    *_ELEMENT_COLUMNS,
)
_UPSERT_RECORD = (
    f"INSERT INTO element_records ({', '.join(_RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _RECORD_COLUMNS)}) "
    "ON CONFLICT (record_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _RECORD_COLUMNS[1:])
)
_SELECT_RECORDS = (
    f"SELECT {', '.join(_RECORD_COLUMNS)} FROM element_records ORDER BY catalog_id, record_id"
)


def _instant_text(value: datetime) -> str:
    """ISO-8601 UTC with a four-digit year and microseconds, ending ``Z``, for every year 1-9999
    (``strftime("%Y")`` writes year 999 as ``999``, which nothing parses back)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _record_row(record: ElementRecord) -> tuple[Any, ...]:
    elements = record.elements
    return (
        record.record_id,
        record.catalog_id,
        record.source,
        _instant_text(record.epoch),
        record.priority,
        1 if record.enabled else 0,
        None if record.expires_at is None else _instant_text(record.expires_at),
        *(getattr(elements, column) for column in _ELEMENT_COLUMNS),
    )


def _row_record(row: Sequence[Any]) -> ElementRecord:
    values = dict(zip(_RECORD_COLUMNS, row, strict=True))
    elements = ElementSet(
        catalog_id=values["catalog_id"],
        epoch=_instant(values["epoch"]),
        **{column: values[column] for column in _ELEMENT_COLUMNS},
    )
    return ElementRecord(
        elements,
        source=values["source"],
        priority=int(values["priority"]),
        enabled=bool(values["enabled"]),
        expires_at=None if values["expires_at"] is None else _instant(values["expires_at"]),
        record_id=values["record_id"],
    )


class TrackingStore:
    """The tracking service's SQLite database (element records and ground sites).

    Open with a file path (created if missing) or ``":memory:"``. Thread-safe (one connection
    behind a lock). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._lock = threading.RLock()
        try:
            # A "file:" path is an SQLite URI ("file:tracking.sqlite3?mode=ro": read-only).
            self._conn = sqlite3.connect(
                self._path, check_same_thread=False, uri=self._path.startswith("file:")
            )
        except sqlite3.Error as bad:
            raise InvalidArgument(
                f"cannot open the tracking database {self._path!r}: {bad}; expected a writable "
                "file path or ':memory:'"
            ) from None
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as bad:
            self._conn.close()
            raise FailedPrecondition(
                f"{self._path!r} is not a usable groundplane tracking database ({bad}); point "
                "the service at a new file or at one it wrote"
            ) from None
        except FailedPrecondition:
            self._conn.close()
            raise

    @property
    def path(self) -> str:
        return self._path

    def writable(self) -> bool:
        """Whether a write to the database succeeds now (a write made and rolled back); False
        for a read-only file or mount."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.execute("UPDATE schema_version SET version = version")
                finally:
                    self._conn.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                return False
        return True

    def journal_mode(self) -> str:
        """SQLite's journal mode (``wal`` for files, ``memory`` for ``":memory:"``)."""
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def schema_version(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT version FROM schema_version").fetchone()
            return int(row[0])

    def _migrate(self) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            row = self._conn.execute("SELECT version FROM schema_version").fetchone()
            current = 0 if row is None else int(row[0])
            if current > SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"the tracking database {self._path!r} has schema version {current}, newer "
                    f"than this groundplane understands ({SCHEMA_VERSION}); upgrade groundplane"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    self._conn.execute(statement)
            if row is None:
                self._conn.execute(
                    "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                )
            elif current != SCHEMA_VERSION:
                self._conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TrackingStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------------------- records

    def put_records(self, records: Iterable[ElementRecord]) -> None:
        """Insert or replace records (by ``record_id``) in one transaction."""
        rows = [_record_row(record) for record in records]
        with self._lock, self._conn:
            self._conn.executemany(_UPSERT_RECORD, rows)

    def load_records(self) -> list[ElementRecord]:
        """Every stored record."""
        with self._lock:
            rows = self._conn.execute(_SELECT_RECORDS).fetchall()
        return [_row_record(row) for row in rows]

    def delete_records(self, catalog_id: str, record_id: str | None = None) -> int:
        """Delete one record or all of ``catalog_id``'s; returns how many rows went."""
        key = canonical_catalog_id(catalog_id)
        with self._lock, self._conn:
            if record_id is None:
                cursor = self._conn.execute(
                    "DELETE FROM element_records WHERE catalog_id = ?", (key,)
                )
            else:
                cursor = self._conn.execute(
                    "DELETE FROM element_records WHERE catalog_id = ? AND record_id = ?",
                    (key, record_id),
                )
            return int(cursor.rowcount)

    # ---------------------------------------------------------------------------- sites

    def put_sites(self, sites: Iterable[Site]) -> None:
        """Insert or replace sites (by id), each with its whole horizon mask."""
        sites = list(sites)
        with self._lock, self._conn:
            for site in sites:
                self._conn.execute(
                    "INSERT INTO sites (site_id, name, lat_deg, lon_deg, alt_m, "
                    "min_elevation_deg) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (site_id) DO UPDATE SET name = excluded.name, "
                    "lat_deg = excluded.lat_deg, lon_deg = excluded.lon_deg, "
                    "alt_m = excluded.alt_m, min_elevation_deg = excluded.min_elevation_deg",
                    (
                        site.id,
                        site.name,
                        site.lat_deg,
                        site.lon_deg,
                        site.alt_m,
                        site.min_elevation_deg,
                    ),
                )
                self._conn.execute("DELETE FROM site_mask_points WHERE site_id = ?", (site.id,))
                self._conn.executemany(
                    "INSERT INTO site_mask_points (site_id, azimuth_deg, elevation_deg) "
                    "VALUES (?, ?, ?)",
                    [(site.id, az, el) for az, el in site.mask.points],
                )

    def put_site(self, site: Site) -> None:
        self.put_sites([site])

    def _select_sites(self, site_id: str | None) -> list[Site]:
        where, params = ("", ()) if site_id is None else (" WHERE site_id = ?", (site_id,))
        with self._lock:
            rows = self._conn.execute(
                "SELECT site_id, name, lat_deg, lon_deg, alt_m, min_elevation_deg FROM sites"
                + where
                + " ORDER BY site_id",
                params,
            ).fetchall()
            points = self._conn.execute(
                "SELECT site_id, azimuth_deg, elevation_deg FROM site_mask_points"
                + where
                + " ORDER BY site_id, azimuth_deg",
                params,
            ).fetchall()
        masks: dict[str, list[tuple[float, float]]] = {}
        for point_site_id, az, el in points:
            masks.setdefault(point_site_id, []).append((float(az), float(el)))
        return [
            Site(
                id=row_id,
                name=name,
                lat_deg=lat,
                lon_deg=lon,
                alt_m=alt,
                min_elevation_deg=min_el,
                mask=HorizonMask(tuple(masks.get(row_id, ()))),
            )
            for row_id, name, lat, lon, alt, min_el in rows
        ]

    def list_sites(self) -> list[Site]:
        """Every stored site, ordered by id."""
        return self._select_sites(None)

    def get_site(self, site_id: str) -> Site:
        """One site by id; :class:`NotFound` if unknown."""
        found = self._select_sites(site_id)
        if not found:
            raise NotFound(f"no ground site with id {site_id!r}; add it first")
        return found[0]

    def delete_site(self, site_id: str) -> None:
        """Delete a site and its mask; :class:`NotFound` if unknown."""
        with self._lock, self._conn:
            cursor = self._conn.execute("DELETE FROM sites WHERE site_id = ?", (site_id,))
            if cursor.rowcount == 0:
                raise NotFound(f"no ground site with id {site_id!r} to delete")
            self._conn.execute("DELETE FROM site_mask_points WHERE site_id = ?", (site_id,))
