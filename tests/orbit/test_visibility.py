"""Visibility at one instant: the visible set, look angles and time to LOS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sgp4.api import Satrec

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.geometry import SatelliteBatch, SiteFrames, look_angles, utc_jd_fr
from groundplane.orbit.passes import find_pass_table
from groundplane.orbit.sites import HorizonMask, Site
from groundplane.orbit.visibility import visibility

from ..data import DATA

ONE_SECOND = 1.0
TINY_DEG = 1e-6
TINY_KM = 1e-6

SITES = [
    Site("svalbard", 78.2298, 15.4078, 500.0),
    Site("singapore", 1.3962, 103.8343, 20.0, min_elevation_deg=10.0),
    Site("dateline", -16.5, 179.99, 30.0),
    Site(
        "masked",
        45.0,
        -75.0,
        100.0,
        min_elevation_deg=5.0,
        mask=HorizonMask(((0.0, 10.0), (90.0, 2.0), (150.0, 25.0), (200.0, 3.0), (270.0, 0.0))),
    ),
]


def load_3le() -> SatelliteBatch:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    ids = [lines[i + 1][2:7].strip() for i in range(0, len(lines) - 2, 3)]
    sats = [Satrec.twoline2rv(lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)]
    return SatelliteBatch(ids, sats)


def test_visible_set_and_look_angles_match_full_look_angles() -> None:
    """The visible pairs are exactly those whose elevation exceeds the site's threshold at their
    azimuth in the full look-angle array, with the same azimuth, elevation, range and rate."""
    batch = load_3le()
    frames = SiteFrames(SITES)
    for moment in (datetime(2026, 8, 16, 1, tzinfo=UTC), datetime(2026, 8, 16, 13, 33, tzinfo=UTC)):
        jd, fr = utc_jd_fr(moment)
        vis = visibility(batch, frames, float(jd[0]), float(fr[0]))
        looks = look_angles(batch, frames, jd, fr)
        el, az = looks.elevation_deg[:, :, 0], looks.azimuth_deg[:, :, 0]
        thr = frames.threshold_deg(np.arange(len(SITES))[None, :], az)
        want = set(zip(*np.nonzero(el > thr), strict=True))
        got = set(zip(vis.sat_index.tolist(), vis.site_index.tolist(), strict=True))
        assert got == {(int(a), int(b)) for a, b in want}
        assert len(got) > 50
        s, k = vis.sat_index, vis.site_index
        assert np.abs(vis.elevation_deg - el[s, k]).max() < TINY_DEG
        d_az = (vis.azimuth_deg - az[s, k] + 180.0) % 360.0 - 180.0
        assert np.abs(d_az).max() < TINY_DEG
        assert np.abs(vis.range_km - looks.range_km[s, k, 0]).max() < TINY_KM
        assert np.abs(vis.range_rate_km_s - looks.range_rate_km_s[s, k, 0]).max() < TINY_KM


def test_time_to_los_matches_pass_search() -> None:
    """For every visible LEO pair, ``los_in_s`` equals the LOS of the (clipped) pass that the
    independent-path pass search finds from the same instant, within 1 s; GEO pairs that stay
    up beyond the lookahead report inf."""
    batch = load_3le()
    moment = datetime(2026, 8, 16, 7, 21, 5, tzinfo=UTC)
    jd, fr = utc_jd_fr(moment)
    vis = visibility(batch, SITES, float(jd[0]), float(fr[0]))
    table = find_pass_table(batch, SITES, moment, moment + timedelta(days=1))
    first = table.aos_clipped
    los_by_pair = {
        (int(s), int(k)): float(t)
        for s, k, t, lc in zip(
            table.sat_index[first],
            table.site_index[first],
            table.los_s[first],
            table.los_clipped[first],
            strict=True,
        )
        if not lc
    }
    checked = 0
    for s, k, los in zip(vis.sat_index, vis.site_index, vis.los_in_s, strict=True):
        if np.isfinite(los):
            assert abs(los - los_by_pair[(int(s), int(k))]) < ONE_SECOND
            checked += 1
        else:
            assert (int(s), int(k)) not in los_by_pair or los_by_pair[
                (int(s), int(k))
            ] > 0.5 * float(batch.period_s[int(s)])
    assert checked > 20


def test_errors_are_reported_and_never_visible() -> None:
    """A satellite SGP4 cannot place (bad eccentricity) is in ``errors`` with its code and is
    never listed as visible, while the others still are."""
    batch = load_3le()
    bad = Satrec.twoline2rv(
        "1 33334U 78066F   06174.85818871  .00000620  00000-0  10000-3 0  6809",
        "2 33334  68.4714 236.1303 5602877 123.7484 302.5767  0.00001000 67521",
    )
    mixed = SatelliteBatch([*list(batch.ids[:50]), "broken"], [*list(batch.satrecs[:50]), bad])
    jd, fr = utc_jd_fr(datetime(2026, 8, 16, 1, tzinfo=UTC))
    vis = visibility(mixed, SITES, float(jd[0]), float(fr[0]))
    assert "broken" in vis.errors()
    assert 50 not in vis.sat_index.tolist()
    assert np.isfinite(vis.elevation_deg).all()


def test_rejects_bad_instant() -> None:
    """A non-finite instant or lookahead raises InvalidArgument."""
    batch = load_3le()
    with pytest.raises(InvalidArgument):
        visibility(batch, SITES, float("nan"), 0.0)
    with pytest.raises(InvalidArgument):
        visibility(batch, SITES, 2461268.5, 0.0, max_lookahead_s=0.0)
