"""The element catalog: active-record rule, upsert identity, filters and the age policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sgp4.api import SatrecArray

from groundplane.kernel.errors import FailedPrecondition, InvalidArgument, NotFound
from groundplane.orbit.elements import ElementSet, parse_tle
from groundplane.tracking.catalog import (
    AgeVerdict,
    Catalog,
    ElementAgePolicy,
    ElementRecord,
    require_plannable,
)

from ..data import DATA

EPOCH = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)
ONE_DAY = timedelta(days=1)


def _elements(
    catalog_id: str = "25544", epoch: datetime = EPOCH, bstar: float = 3e-4
) -> ElementSet:
    return ElementSet(
        catalog_id=catalog_id,
        name="SAT " + catalog_id,
        epoch=epoch,
        mean_motion_rev_per_day=15.5,
        eccentricity=0.0004,
        inclination_deg=51.6,
        raan_deg=100.0,
        arg_of_pericenter_deg=90.0,
        mean_anomaly_deg=10.0,
        bstar=bstar,
    )


def test_active_prefers_priority_then_newest_epoch() -> None:
    """Highest priority wins even when older; among equal priorities the newest epoch wins."""
    catalog = Catalog()
    old_high = ElementRecord(_elements(epoch=EPOCH - ONE_DAY), source="operator", priority=10)
    new_low = ElementRecord(_elements(epoch=EPOCH), source="celestrak", priority=0)
    newer_low = ElementRecord(_elements(epoch=EPOCH + ONE_DAY), source="celestrak", priority=0)
    catalog.upsert([new_low, old_high, newer_low])
    now = EPOCH + 2 * ONE_DAY
    assert catalog.active("25544", now) == old_high
    catalog.set_enabled("25544", old_high.record_id, False)
    assert catalog.active("25544", now) == newer_low


def test_expired_and_disabled_records_are_never_active() -> None:
    """A record stops being active at its expiry; when none is usable the error says why."""
    catalog = Catalog()
    expiring = ElementRecord(_elements(), source="operator", priority=5, expires_at=EPOCH + ONE_DAY)
    fallback = ElementRecord(_elements(epoch=EPOCH - ONE_DAY), source="celestrak")
    catalog.upsert([expiring, fallback])
    assert catalog.active("25544", EPOCH + ONE_DAY - timedelta(seconds=1)) == expiring
    assert catalog.active("25544", EPOCH + ONE_DAY) == fallback
    catalog.set_enabled("25544", fallback.record_id, False)
    with pytest.raises(FailedPrecondition, match="1 disabled, 1 expired"):
        catalog.active("25544", EPOCH + 2 * ONE_DAY)
    assert catalog.active_all(EPOCH + 2 * ONE_DAY) == []


def test_upserting_the_same_source_and_epoch_replaces() -> None:
    """(catalog id, source, epoch) identifies a record: upserting it again replaces it."""
    catalog = Catalog()
    first = catalog.upsert([_elements()], source="celestrak")[0]
    second = catalog.upsert([_elements(bstar=1e-4)], source="celestrak", priority=3)[0]
    other_source = catalog.upsert([_elements()], source="space-track")[0]
    records = catalog.get("25544")
    assert first.record_id == second.record_id != other_source.record_id
    assert len(records) == 2
    assert records[0] == second
    assert records[0].elements.bstar == 1e-4


def test_list_filters_by_prefix_and_enabled() -> None:
    """list() filters by catalog id prefix and enabled flag, ordered by id then rank."""
    catalog = Catalog()
    catalog.upsert([_elements("25544"), _elements("25545"), _elements("48274")])
    catalog.upsert([_elements("25544", EPOCH - ONE_DAY)], source="old", enabled=False)
    assert [r.catalog_id for r in catalog.list(prefix="255")] == ["25544", "25544", "25545"]
    assert [r.source for r in catalog.list(prefix="25544", enabled=False)] == ["old"]
    assert len(catalog.list(enabled=True)) == 3
    assert catalog.catalog_ids() == ["25544", "25545", "48274"]
    assert len(catalog) == 3


def test_unknown_ids_raise_not_found() -> None:
    """get, active and delete of an unknown id (or record) raise NotFound with guidance."""
    catalog = Catalog([ElementRecord(_elements())])
    with pytest.raises(NotFound, match="'99999'"):
        catalog.get("99999")
    with pytest.raises(NotFound):
        catalog.active("99999", EPOCH)
    with pytest.raises(NotFound, match="no record 'nope'"):
        catalog.delete("25544", "nope")
    with pytest.raises(NotFound):
        catalog.delete("12")
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        catalog.active("25544", datetime(2026, 8, 15))


def test_delete_one_record_or_all() -> None:
    """delete removes one record by id or every record of the satellite; counts are returned."""
    catalog = Catalog()
    kept, dropped = catalog.upsert([_elements(), _elements(epoch=EPOCH - ONE_DAY)])
    assert catalog.delete("25544", dropped.record_id) == 1
    assert catalog.get("25544") == [kept]
    assert catalog.delete("25544") == 1
    assert "25544" not in catalog


def test_alpha5_and_padded_ids_find_the_same_satellite() -> None:
    """Lookups canonicalise ids: 'A0001' and '100001', '00005' and '5' are the same key."""
    catalog = Catalog()
    catalog.upsert([_elements("100001"), _elements("5")])
    assert catalog.get("A0001") == catalog.get("100001")
    assert catalog.active("00005", EPOCH).catalog_id == "5"
    assert "A0001" in catalog


def test_active_all_builds_a_propagation_batch() -> None:
    """active_all returns one record per usable satellite, ready for SatrecArray."""
    path = DATA / "satellites-2026-08.3le"
    sets = parse_tle(path.read_text(), source=path.name)
    catalog = Catalog()
    catalog.upsert(sets, source="celestrak")
    catalog.upsert(sets[:10], source="stale", priority=-1)
    catalog.set_enabled(sets[0].catalog_id, catalog.get(sets[0].catalog_id)[0].record_id, False)
    now = datetime(2026, 8, 16, tzinfo=UTC)
    active = catalog.active_all(now)
    assert len(active) == 636
    sources = {record.catalog_id: record.source for record in active}
    assert sources.pop(sets[0].catalog_id) == "stale"
    assert set(sources.values()) == {"celestrak"}
    assert [r.catalog_id for r in active] == sorted((r.catalog_id for r in active), key=int)
    batch = SatrecArray([record.elements.to_satrec() for record in active])
    jd = np.array([now.date().toordinal() + 1721424.5])
    errors, positions, _ = batch.sgp4(jd, np.zeros(1))
    assert positions.shape == (636, 1, 3)
    assert np.count_nonzero(errors) < 10


_records = st.builds(
    lambda cid, day, source, priority, enabled, expiry: ElementRecord(
        _elements(cid, EPOCH + timedelta(days=day)),
        source=source,
        priority=priority,
        enabled=enabled,
        expires_at=None if expiry is None else EPOCH + timedelta(days=expiry),
    ),
    st.sampled_from(["1", "2", "3"]),
    st.integers(-5, 5),
    st.sampled_from(["a", "b", "c"]),
    st.integers(-2, 2),
    st.booleans(),
    st.one_of(st.none(), st.integers(-3, 6)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_records, max_size=15), st.integers(-4, 8))
def test_active_matches_the_rule_by_brute_force(records: list[ElementRecord], day: int) -> None:
    """For random records, active_all equals the rule evaluated independently per satellite."""
    catalog = Catalog()
    catalog.upsert(records)
    now = EPOCH + timedelta(days=day)
    latest: dict[tuple[str, str, datetime], ElementRecord] = {}
    for record in records:  # later upserts of the same identity replace earlier ones
        latest[(record.catalog_id, record.source, record.epoch)] = record
    expected: dict[str, ElementRecord] = {}
    for record in latest.values():
        if not record.enabled or (record.expires_at is not None and now >= record.expires_at):
            continue
        best = expected.get(record.catalog_id)
        if best is None or (record.priority, record.epoch, record.source) > (
            best.priority,
            best.epoch,
            best.source,
        ):
            expected[record.catalog_id] = record
    assert {r.catalog_id: r for r in catalog.active_all(now)} == expected


# ---------------------------------------------------------------------------- age policy


def test_age_policy_verdicts_at_the_thresholds() -> None:
    """Default policy: ≤3 days ok, ≤14 days warn, beyond refuse — in either direction."""
    policy = ElementAgePolicy()
    elements = _elements()
    cases = [
        (timedelta(days=2.9), AgeVerdict.OK),
        (timedelta(days=3.1), AgeVerdict.WARN),
        (timedelta(days=13.9), AgeVerdict.WARN),
        (timedelta(days=14.1), AgeVerdict.REFUSE),
        (timedelta(days=-14.1), AgeVerdict.REFUSE),
        (timedelta(days=-1), AgeVerdict.OK),
    ]
    for offset, verdict in cases:
        judgement = policy.judge(elements, EPOCH + offset)
        assert judgement.verdict is verdict, offset
        assert judgement.age_days == pytest.approx(abs(offset.total_seconds()) / 86400.0)


def test_refusal_teaches_and_raises_failed_precondition() -> None:
    """require_plannable raises FailedPrecondition with age, limit and the remedy."""
    record = ElementRecord(_elements())
    with pytest.raises(FailedPrecondition) as caught:
        require_plannable(record, EPOCH + timedelta(days=20))
    message = caught.value.message
    assert "20.0 days old" in message
    assert "beyond 14 days" in message
    assert "ingest fresher elements" in message
    warned = require_plannable(record, EPOCH + timedelta(days=5))
    assert warned.verdict is AgeVerdict.WARN
    assert "5.0 days old" in warned.message


def test_planning_window_end_counts() -> None:
    """A plan that starts fresh but ends beyond the refusal age is refused."""
    elements = _elements()
    assert require_plannable(elements, EPOCH, until=EPOCH + ONE_DAY).verdict is AgeVerdict.OK
    with pytest.raises(FailedPrecondition):
        require_plannable(elements, EPOCH, until=EPOCH + timedelta(days=15))
    strict = ElementAgePolicy(warn_after_days=0.5, refuse_after_days=1.0)
    with pytest.raises(FailedPrecondition, match="beyond 1 days"):
        require_plannable(elements, EPOCH + timedelta(days=1.5), strict)


def test_policy_and_record_validation() -> None:
    """Inconsistent thresholds and malformed record metadata are refused with a reason."""
    with pytest.raises(InvalidArgument, match="warn_after_days <= refuse_after_days"):
        ElementAgePolicy(warn_after_days=10, refuse_after_days=5)
    with pytest.raises(InvalidArgument, match="non-empty"):
        ElementRecord(_elements(), source=" ")
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        ElementRecord(_elements(), expires_at=datetime(2026, 1, 1))
    record = ElementRecord(_elements())
    with pytest.raises(InvalidArgument, match="does not belong"):
        replace(record, record_id="0123456789abcdef")
