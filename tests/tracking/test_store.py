"""SQLite persistence of the catalog and the ground sites."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from groundplane.kernel.errors import FailedPrecondition, NotFound
from groundplane.orbit.elements import parse_tle
from groundplane.orbit.sites import HorizonMask, Site
from groundplane.tracking.catalog import Catalog, ElementRecord
from groundplane.tracking.store import SCHEMA_VERSION, TrackingStore, _instant, _instant_text

from ..data import DATA

NOW = datetime(2024, 5, 10, tzinfo=UTC)


def _stations() -> list[ElementRecord]:
    path = DATA / "stations.tle"
    sets = parse_tle(path.read_text(), source=path.name)
    records = [ElementRecord(e, source="celestrak") for e in sets]
    records.append(
        ElementRecord(
            sets[0],
            source="operator",
            priority=7,
            enabled=False,
            expires_at=datetime(2024, 5, 11, 1, 2, 3, 456789, tzinfo=UTC),
        )
    )
    return records


SITES = [
    Site(
        id="svalbard",
        name="SvalSat",
        lat_deg=78.2297,
        lon_deg=15.4078,
        alt_m=458.0,
        min_elevation_deg=5.0,
        mask=HorizonMask.from_points([(0.0, 2.0), (90.0, 7.5), (200.0, 1.0)]),
    ),
    Site(id="plain", lat_deg=-33.0, lon_deg=-70.5),
]


def test_catalog_and_sites_survive_a_restart(tmp_path: Path) -> None:
    """Write records and sites, close, reopen: the same records, sites and active choices."""
    path = tmp_path / "tracking.sqlite"
    records = _stations()
    with TrackingStore(path) as store:
        catalog = Catalog(records, store=store)
        store.put_sites(SITES)
        active_before = catalog.active_all(NOW)
    with TrackingStore(path) as reopened:
        loaded = reopened.load_records()
        assert sorted(loaded, key=lambda r: r.record_id) == sorted(
            records, key=lambda r: r.record_id
        )
        assert {r.record_id for r in loaded} == {r.record_id for r in records}
        assert reopened.list_sites() == sorted(SITES, key=lambda s: s.id)
        assert reopened.get_site("svalbard").mask.points == SITES[0].mask.points
        assert Catalog.load(reopened).active_all(NOW) == active_before


def test_reloaded_elements_propagate_bit_for_bit(tmp_path: Path) -> None:
    """Floats and epochs are stored exactly: reloaded Satrecs give identical positions."""
    path = tmp_path / "tracking.sqlite"
    records = _stations()
    with TrackingStore(path) as store:
        store.put_records(records)
    with TrackingStore(path) as store:
        by_id = {r.record_id: r for r in store.load_records()}
    for record in records:
        mine = record.elements.to_satrec()
        theirs = by_id[record.record_id].elements.to_satrec()
        for days in (0.0, 1.5):
            assert mine.sgp4(mine.jdsatepoch, mine.jdsatepochF + days) == theirs.sgp4(
                theirs.jdsatepoch, theirs.jdsatepochF + days
            )


def test_catalog_changes_write_through(tmp_path: Path) -> None:
    """Upsert-replace, enable/disable and deletes made on the catalog persist."""
    path = tmp_path / "tracking.sqlite"
    records = _stations()
    iss = records[0].catalog_id
    with TrackingStore(path) as store:
        catalog = Catalog.load(store)
        catalog.upsert(records)
        catalog.upsert([records[1].elements], source="celestrak", priority=4)  # replaces
        catalog.set_enabled(iss, records[-1].record_id, True)
        catalog.delete(records[2].catalog_id)
        catalog.delete(iss, records[0].record_id)
    with TrackingStore(path) as store:
        catalog = Catalog.load(store)
        assert len(catalog) == 26
        assert [r.priority for r in catalog.get(records[1].catalog_id)] == [4]
        assert [(r.source, r.enabled) for r in catalog.get(iss)] == [("operator", True)]
        with pytest.raises(NotFound):
            catalog.get(records[2].catalog_id)


def test_site_replace_and_delete(tmp_path: Path) -> None:
    """Putting a site again replaces its mask; deleting an unknown site raises NotFound."""
    with TrackingStore(tmp_path / "t.sqlite") as store:
        store.put_sites(SITES)
        store.put_site(Site(id="svalbard", lat_deg=78.0, lon_deg=15.0, min_elevation_deg=10.0))
        site = store.get_site("svalbard")
        assert site.mask.is_empty
        assert site.min_elevation_deg == 10.0
        store.delete_site("svalbard")
        assert [s.id for s in store.list_sites()] == ["plain"]
        with pytest.raises(NotFound, match="'svalbard'"):
            store.delete_site("svalbard")
        with pytest.raises(NotFound):
            store.get_site("svalbard")


def test_file_database_uses_wal_and_records_its_schema_version(tmp_path: Path) -> None:
    """A file store runs in WAL mode and writes the schema version it was created with."""
    path = tmp_path / "t.sqlite"
    with TrackingStore(path) as store:
        assert store.journal_mode() == "wal"
        assert store.schema_version() == SCHEMA_VERSION
    with TrackingStore(":memory:") as memory:
        assert memory.schema_version() == SCHEMA_VERSION
        assert memory.load_records() == []


def test_newer_schema_and_foreign_files_are_refused(tmp_path: Path) -> None:
    """A database from a newer groundplane, or a file that is no database, is refused."""
    path = tmp_path / "t.sqlite"
    TrackingStore(path).close()
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    connection.close()
    with pytest.raises(FailedPrecondition, match="newer than this groundplane"):
        TrackingStore(path)
    garbage = tmp_path / "notes.txt"
    garbage.write_bytes(b"these are not the tables you are looking for" * 100)
    with pytest.raises(FailedPrecondition, match="not a usable"):
        TrackingStore(garbage)


def test_expiry_round_trips_to_the_microsecond(tmp_path: Path) -> None:
    """Record expiry instants are stored as UTC text and come back identical."""
    records = _stations()
    expiry = records[-1].expires_at
    assert expiry is not None
    with TrackingStore(tmp_path / "t.sqlite") as store:
        store.put_records([records[-1]])
        (loaded,) = store.load_records()
    assert loaded.expires_at == expiry
    enabled = replace(loaded, enabled=True)
    assert enabled.usable_at(expiry - timedelta(microseconds=1))
    assert not enabled.usable_at(expiry)


@given(st.datetimes(timezones=st.just(UTC)))
def test_every_instant_round_trips_through_the_stored_text(instant: datetime) -> None:
    """The store's instant text parses back to the same instant for every UTC datetime Python
    can hold (years 1-9999; years below 1000 once wrote '999-…', which did not parse), and the
    text sorts as time does."""
    text = _instant_text(instant)
    assert _instant(text) == instant
    assert (text < _instant_text(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))) == (
        instant < datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    )
