"""Pass search against the independent brute-force reference, plus clipping and filters."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sgp4
from sgp4.api import Satrec

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.geometry import SatelliteBatch, utc_datetimes
from groundplane.orbit.passes import Pass, find_pass_table, find_passes
from groundplane.orbit.sites import HorizonMask, Site

from ..data import DATA
from .reference import RefPass, brute_force_passes

SGP4_DIR = Path(sgp4.__file__).resolve().parent

ONE_SECOND = 1.0
#: AOS/LOS agreement actually required of the search: the issue asks for 1 s, the refinement
#: reaches about 1 ms (worst seen 6 ms), so a regression to coarse interpolation fails here.
FIFTY_MILLISECONDS = 0.05
MAX_ELEVATION_TOL_DEG = 0.05
#: Reference sampling step; a pass shorter than this can be missed by the reference.
REFERENCE_STEP_S = 5.0

SVALBARD = Site("svalbard", 78.2298, 15.4078, 500.0)
SINGAPORE = Site("singapore", 1.3962, 103.8343, 20.0, min_elevation_deg=5.0)
DATELINE = Site("dateline", -16.5, 179.99, 30.0)
MASKED = Site(
    "masked",
    45.0,
    -179.9,
    100.0,
    min_elevation_deg=5.0,
    mask=HorizonMask(((0.0, 10.0), (90.0, 2.0), (150.0, 25.0), (200.0, 3.0), (270.0, 0.0))),
)
SITES = [SVALBARD, SINGAPORE, DATELINE, MASKED]


def load_3le() -> tuple[list[str], list[Satrec]]:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    ids = [lines[i + 1][2:7].strip() for i in range(0, len(lines) - 2, 3)]
    sats = [Satrec.twoline2rv(lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)]
    return ids, sats


def vallado(satnum: int) -> Satrec:
    lines = (SGP4_DIR / "SGP4-VER.TLE").read_text().splitlines()
    for a, b in itertools.pairwise(lines):
        if a.startswith("1 ") and b.startswith("2 ") and int(a[2:7]) == satnum:
            return Satrec.twoline2rv(a, b[:69])
    raise AssertionError(satnum)


def pick_3le() -> tuple[list[str], list[Satrec]]:
    """A few LEO (low and high inclination), MEO and GEO objects from the 3LE file."""
    ids, sats = load_3le()
    rev_per_day = np.array([s.no_kozai for s in sats]) * 1440 / (2 * math.pi)
    inc = np.degrees([s.inclo for s in sats])
    chosen: list[int] = []
    for lo, hi, count in ((14.5, 17.0, 3), (11.0, 14.5, 2), (1.9, 2.2, 2), (0.9, 1.1, 3)):
        idx = np.flatnonzero((rev_per_day >= lo) & (rev_per_day < hi))
        chosen.extend(idx[np.linspace(0, idx.size - 1, count).astype(int)].tolist())
    chosen.append(int(np.flatnonzero(inc < 10)[0]))
    chosen = sorted(set(chosen))
    return [ids[i] for i in chosen], [sats[i] for i in chosen]


def compare(mine: list[Pass], ref: list[RefPass], label: str) -> None:
    mine_long = [
        p for p in mine if p.duration_s >= 2 * REFERENCE_STEP_S or p.aos_clipped or p.los_clipped
    ]
    # Extra passes are allowed only when shorter than the reference's resolution.
    assert len(mine_long) <= len(ref) <= len(mine), (label, mine, ref)

    def nearest(r: RefPass) -> Pass:
        return min(mine, key=lambda p: abs((p.aos - r.aos).total_seconds()))

    matched = [nearest(r) for r in ref]
    assert len({id(p) for p in matched}) == len(ref), label
    for p, r in zip(matched, ref, strict=True):
        assert abs((p.aos - r.aos).total_seconds()) < FIFTY_MILLISECONDS, (label, p, r)
        assert abs((p.los - r.los).total_seconds()) < FIFTY_MILLISECONDS, (label, p, r)
        assert abs(p.max_elevation_deg - r.max_elevation_deg) < MAX_ELEVATION_TOL_DEG, (label, p, r)
        assert p.aos <= p.tca <= p.los
        assert (p.aos_clipped, p.los_clipped) == (r.aos_clipped, r.los_clipped), (label, p, r)


@pytest.mark.slow
def test_passes_match_brute_force_for_leo_meo_geo_with_and_without_mask() -> None:
    """Over one day, for LEO, MEO and GEO satellites at a high-latitude, an equatorial, a
    dateline and a masked site: every reference pass is found, no extra pass longer than the
    reference's resolution, AOS/LOS within 1 s, max elevation within 0.05°, same clip flags."""
    ids, sats = pick_3le()
    start = datetime(2026, 8, 16, 3, 17, tzinfo=UTC)
    stop = start + timedelta(days=1)
    table = find_pass_table(SatelliteBatch(ids, sats), SITES, start, stop)
    found = table.passes()
    total = 0
    for sat_id, satrec in zip(ids, sats, strict=True):
        for site in SITES:
            ref = brute_force_passes(satrec, site, start, stop, REFERENCE_STEP_S)
            total += len(ref)
            mine = [p for p in found if p.catalog_id == sat_id and p.site_id == site.id]
            compare(mine, ref, f"{sat_id}@{site.id}")
    assert total > 40


@pytest.mark.slow
def test_passes_match_brute_force_for_deep_space_orbits() -> None:
    """Molniya-like (e ≈ 0.7), eccentric 20-hour and near-geosynchronous objects from Vallado's
    set, near their epochs: same passes as the reference (several culminations reported once,
    TCA at the highest one)."""
    cases = [vallado(n) for n in (8195, 9880, 4632, 14128)]
    ids = [str(s.satnum) for s in cases]
    for satrec in cases:
        start = utc_datetimes(satrec.jdsatepoch, satrec.jdsatepochF)[0] + timedelta(hours=1)
        stop = start + timedelta(days=1.5)
        found = find_passes(SatelliteBatch([str(satrec.satnum)], [satrec]), SITES, start, stop)
        for site in SITES:
            ref = brute_force_passes(satrec, site, start, stop, REFERENCE_STEP_S)
            mine = [p for p in found if p.site_id == site.id]
            compare(mine, ref, f"{satrec.satnum}@{site.id}")
    assert ids


def test_geostationary_satellite_gives_one_clipped_pass_or_none() -> None:
    """A GEO satellite always above the horizon yields exactly one pass spanning the window with
    both ends clipped; from a site that never sees it, none."""
    ids, sats = load_3le()
    rev = np.array([s.no_kozai for s in sats]) * 1440 / (2 * math.pi)
    geo = int(
        np.flatnonzero((rev > 0.99) & (rev < 1.01) & (np.degrees([s.ecco for s in sats]) < 1))[0]
    )
    satrec = sats[geo]
    start = datetime(2026, 8, 16, tzinfo=UTC)
    stop = start + timedelta(hours=12)
    batch = SatelliteBatch([ids[geo]], [satrec])
    # The equatorial site (10° longitude grid) that sees the satellite highest.
    best = max(
        (Site(f"lon{int(x)}", 0.0, float(x), 0.0) for x in range(-180, 180, 10)),
        key=lambda s: find_pass_table(batch, [s], start, stop).max_elevation_deg.max(initial=-90),
    )
    under = find_pass_table(batch, [best], start, stop)
    assert len(under) == 1
    assert under.aos_clipped[0]
    assert under.los_clipped[0]
    assert under.aos_s[0] == 0.0
    assert under.los_s[0] == pytest.approx(12 * 3600.0)
    opposite = Site("opposite", 0.0, ((best.lon_deg + 360.0) % 360.0) - 180.0, 0.0)
    assert len(find_pass_table(batch, [opposite], start, stop)) == 0


def test_window_starting_mid_pass_is_clipped() -> None:
    """A window that starts inside a pass reports that pass with aos_clipped and AOS at the
    window start; its LOS equals the LOS found from an earlier window within 1 s."""
    ids, sats = load_3le()
    batch = SatelliteBatch(ids[:40], sats[:40])
    start = datetime(2026, 8, 16, tzinfo=UTC)
    full = find_passes(batch, [SVALBARD], start, start + timedelta(hours=6))
    inner = [p for p in full if not p.aos_clipped and not p.los_clipped and p.duration_s > 120]
    target = inner[len(inner) // 2]
    mid = target.aos + timedelta(seconds=target.duration_s / 2)
    later = find_passes(batch, [SVALBARD], mid, mid + timedelta(hours=1))
    same = [p for p in later if p.catalog_id == target.catalog_id and p.aos == mid]
    assert len(same) == 1
    assert same[0].aos_clipped
    assert not same[0].los_clipped
    assert abs((same[0].los - target.los).total_seconds()) < ONE_SECOND


def test_min_culmination_and_min_duration_filters() -> None:
    """The filters keep exactly the passes of the unfiltered search that reach the minimum
    culmination and last the minimum duration."""
    ids, sats = load_3le()
    batch = SatelliteBatch(ids[:80], sats[:80])
    start = datetime(2026, 8, 16, tzinfo=UTC)
    stop = start + timedelta(hours=12)
    every = find_passes(batch, SITES, start, stop)
    high = find_passes(batch, SITES, start, stop, min_max_elevation_deg=30.0)
    long_ = find_passes(batch, SITES, start, stop, min_duration_s=400.0)
    assert 0 < len(high) < len(every)
    assert 0 < len(long_) < len(every)
    assert high == [p for p in every if p.max_elevation_deg >= 30.0]
    assert long_ == [p for p in every if p.duration_s >= 400.0]


def test_decayed_satellite_reported_in_pass_search() -> None:
    """A satellite that decays inside the window is listed in ``errors`` with code 6; the
    search neither crashes nor invents passes after the decay."""
    lines = (SGP4_DIR / "SGP4-VER.TLE").read_text().splitlines()
    decayer = None
    for a, b in itertools.pairwise(lines):
        if a.startswith("1 ") and b.startswith("2 "):
            s = Satrec.twoline2rv(a, b[:69])
            days = np.arange(0, 40.0, 0.25)
            e, _, _ = s.sgp4_array(s.jdsatepoch + days, np.full(days.size, s.jdsatepochF))
            if e[0] == 0 and 6 in e:
                decayer = s
                break
    assert decayer is not None
    days = np.arange(0, 40.0, 0.25)
    e, _, _ = decayer.sgp4_array(decayer.jdsatepoch + days, np.full(days.size, decayer.jdsatepochF))
    decay_day = float(days[np.flatnonzero(e)[0]])
    epoch = utc_datetimes(decayer.jdsatepoch, decayer.jdsatepochF)[0]
    start = epoch + timedelta(days=max(0.0, decay_day - 1.0))
    stop = epoch + timedelta(days=decay_day + 1.0)
    table = find_pass_table(SatelliteBatch(["decayer"], [decayer]), SITES, start, stop)
    assert table.errors["decayer"][0] == 6
    assert "decayed" in table.errors["decayer"][1]
    ends = table.datetimes(table.los_s)
    assert all(t <= epoch + timedelta(days=decay_day) for t in ends)


def test_rejects_bad_windows() -> None:
    """An empty or reversed window and a non-finite filter raise InvalidArgument that says why."""
    ids, sats = load_3le()
    batch = SatelliteBatch(ids[:2], sats[:2])
    start = datetime(2026, 8, 16, tzinfo=UTC)
    with pytest.raises(InvalidArgument, match="after start"):
        find_passes(batch, SITES, start, start)
    with pytest.raises(InvalidArgument, match="finite"):
        find_passes(batch, SITES, start, start + timedelta(hours=1), min_duration_s=math.nan)


def test_window_whose_elevation_peaks_all_fall_outside_passes_is_searched() -> None:
    """The ISS over a masked Cambridge, 2026-08-15 00–06 UTC: every interior elevation peak lies
    outside a pass (below the mask), which once made the TCA step index an empty array; the
    search now returns the same passes as the brute-force reference."""
    ids, sats = load_3le()
    iss = ids.index("25544")
    site = Site(
        "cambridge",
        52.2,
        0.1,
        30.0,
        min_elevation_deg=10.0,
        mask=HorizonMask(((0.0, 5.0), (90.0, 20.0), (180.0, 5.0), (270.0, 12.0))),
    )
    start = datetime(2026, 8, 15, tzinfo=UTC)
    stop = start + timedelta(hours=6)
    found = find_pass_table(SatelliteBatch([ids[iss]], [sats[iss]]), [site], start, stop).passes()
    compare(found, brute_force_passes(sats[iss], site, start, stop, REFERENCE_STEP_S), "iss@cam")
