"""The handoff process's catalog-fed inputs: pass windows predicted from the newest catalog view
(again when it changes) and ISL line of sight from the newest view's elements."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from groundplane.handoff.catalog import CatalogView, FixedView, StaticCatalog
from groundplane.handoff.isl import IslLineOfSight
from groundplane.handoff.passes import RefreshedPasses
from groundplane.handoff.planner import PassSchedule
from groundplane.kernel.clock import SimulatedClock
from groundplane.kernel.errors import InvalidArgument
from groundplane.links.client import line_of_sight
from groundplane.orbit.constellations import generate
from groundplane.orbit.geometry import SatelliteBatch, propagate, utc_jd_fr
from groundplane.orbit.passes import find_passes
from groundplane.scenario import default_stations

EPOCH = datetime(2026, 8, 15, tzinfo=UTC)
HORIZON_S = 3 * 3600.0
ELEMENTS = generate("walker:12/3/1@550km:53", EPOCH)
SITES = tuple(default_stations())
ISL_SHELL = "walker:72/6/1@550km:53"
"""Twelve satellites per plane: in-plane neighbours are 30° (3,600 km) apart."""


def batch_of(count: int) -> SatelliteBatch:
    chosen = ELEMENTS[:count]
    return SatelliteBatch([e.catalog_id for e in chosen], [e.to_satrec() for e in chosen])


@dataclass
class ChangingCatalog:
    """A catalog source whose view the test replaces (as tracking's follower does)."""

    view: FixedView | None = None
    listeners: list[Callable[[CatalogView], None]] | None = None

    def current(self) -> FixedView | None:
        return self.view

    def add_listener(self, callback: Callable[[CatalogView], None]) -> None:
        self.listeners = [*(self.listeners or []), callback]

    def publish(self, view: FixedView) -> None:
        self.view = view
        for listener in self.listeners or []:
            listener(view)


async def test_passes_are_predicted_from_the_view_and_again_when_it_changes() -> None:
    """Before any view there is no prediction; the first view's passes are find_passes over its
    batch and sites from now over the horizon; a new view (more satellites) is predicted at once
    and its windows include the added satellites'."""
    clock = SimulatedClock(EPOCH, speed=1.0)
    catalog = ChangingCatalog()
    passes = RefreshedPasses(catalog, clock, horizon_s=HORIZON_S)
    async with asyncio.TaskGroup() as tasks:
        runner = tasks.create_task(passes.run(), name="test-passes")
        await asyncio.sleep(0.05)  # room to predict wrongly: there is no view yet
        assert not passes.ready
        catalog.publish(FixedView(1, batch_of(4), SITES))
        await passes.wait_ready(30.0)
        assert passes.predicted_version == 1
        start, stop = EPOCH, EPOCH + timedelta(seconds=HORIZON_S)
        expected = PassSchedule.from_passes(find_passes(batch_of(4), SITES, start, stop))
        got = passes.windows(start, stop)
        assert {(w.satellite_id, w.station_id) for w in got} == {
            (w.satellite_id, w.station_id) for w in expected.all
        }
        assert len(got) == len(expected.all) > 0
        first_satellites = {w.satellite_id for w in got}

        catalog.publish(FixedView(2, batch_of(12), SITES))
        await passes.wait_for_version(2, 30.0)
        assert passes.predicted_version == 2
        later = {w.satellite_id for w in passes.windows(start, stop)}
        assert first_satellites < later
        assert later - first_satellites <= {e.catalog_id for e in ELEMENTS[4:]}
        runner.cancel()


async def test_a_static_catalog_is_predicted_once_ready() -> None:
    """A static catalog (the in-process system's) gives its one view at once: the first
    prediction exists without any listener call."""
    clock = SimulatedClock(EPOCH, speed=1.0)
    passes = RefreshedPasses(StaticCatalog(batch_of(4), SITES), clock, horizon_s=HORIZON_S)
    async with asyncio.TaskGroup() as tasks:
        runner = tasks.create_task(passes.run(), name="test-passes")
        await passes.wait_ready(30.0)
        assert passes.predicted_version == 1
        assert passes.windows(EPOCH, EPOCH + timedelta(seconds=HORIZON_S))
        runner.cancel()


def expected_isl(batch: SatelliteBatch, a: str, b: str, at: datetime, max_range_km: float) -> bool:
    jd, fr = utc_jd_fr(at)
    positions = propagate(batch, jd, fr).r_teme_km[:, 0, :]
    pa = tuple(float(x) for x in positions[batch.index_of(a)])
    pb = tuple(float(x) for x in positions[batch.index_of(b)])
    return math.dist(pa, pb) <= max_range_km and line_of_sight(pa, pb)  # type: ignore[arg-type]


def test_isl_line_of_sight_uses_the_newest_view() -> None:
    """With no view, or a satellite missing from the view, there is no ISL; once a view holding
    both is current, the answer is the links' line of sight within range: in-plane neighbours
    30° apart see each other, satellites half an orbit apart are hidden by the Earth."""
    shell = generate(ISL_SHELL, EPOCH)
    full = SatelliteBatch([e.catalog_id for e in shell], [e.to_satrec() for e in shell])
    first, neighbour, opposite = shell[0].catalog_id, shell[1].catalog_id, shell[6].catalog_id
    catalog = ChangingCatalog()
    isl = IslLineOfSight(catalog, max_range_km=5_000.0)
    assert not isl(first, neighbour, EPOCH)
    catalog.publish(FixedView(1, full.subset([0]), SITES))
    assert not isl(first, neighbour, EPOCH)
    catalog.publish(FixedView(2, full, SITES))
    assert isl(first, neighbour, EPOCH)
    assert not isl(first, opposite, EPOCH)
    for other in (neighbour, opposite):
        assert isl(first, other, EPOCH) == expected_isl(full, first, other, EPOCH, 5_000.0)


def test_isl_range_must_be_positive() -> None:
    """A non-positive or non-finite range is refused with INVALID_ARGUMENT."""
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(InvalidArgument):
            IslLineOfSight(StaticCatalog(batch_of(2), SITES), max_range_km=bad)


async def test_a_failed_prediction_keeps_the_passes_held_until_the_next_view() -> None:
    """A view that cannot be predicted (here: no SGP4 batch at all) is logged and leaves the
    previous passes in place; the next good view is predicted as usual."""
    clock = SimulatedClock(EPOCH, speed=1.0)
    catalog = ChangingCatalog(FixedView(1, batch_of(4), SITES))
    passes = RefreshedPasses(catalog, clock, horizon_s=HORIZON_S)
    window = (EPOCH, EPOCH + timedelta(seconds=HORIZON_S))
    async with asyncio.TaskGroup() as tasks:
        runner = tasks.create_task(passes.run(), name="test-passes")
        await passes.wait_for_version(1, 30.0)
        held = passes.windows(*window)
        assert held
        catalog.publish(FixedView(2, None, SITES))  # type: ignore[arg-type]
        await passes.wait_for_version(2, 30.0, attempted=True)
        assert passes.predicted_version == 1
        assert passes.windows(*window) == held
        catalog.publish(FixedView(3, batch_of(12), SITES))
        await passes.wait_for_version(3, 30.0)
        assert len(passes.windows(*window)) > len(held)
        runner.cancel()
