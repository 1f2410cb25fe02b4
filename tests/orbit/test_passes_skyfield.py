"""Pass search against Skyfield (an independent implementation of the same SGP4 + topocentric
geometry): mask-notch splitting, short low passes, and random satellite × site cases."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from numpy.typing import NDArray
from sgp4.api import Satrec
from skyfield.api import EarthSatellite, Time, Timescale, wgs84
from skyfield.api import load as sf_load

from groundplane.orbit.geometry import SatelliteBatch
from groundplane.orbit.passes import PassTable, find_pass_table
from groundplane.orbit.sites import HorizonMask, Site

from ..data import DATA

#: The issue's edge tolerance: AOS/LOS within 1 s of the reference …
EDGE_TOL_S = 1.0
#: … or, where the crossing is so slow that 1 s is less than this, within this much elevation
#: of the threshold (Skyfield's elevation at our edge time).
EDGE_TOL_DEG = 0.01
#: Passes are matched to reference passes whose edges are this close (s).
MATCH_S = 60.0
#: A mask of 25° around azimuth 90° (the issue's example); 5° elsewhere.
NOTCH = HorizonMask(((0.0, 0.0), (80.0, 0.0), (90.0, 25.0), (100.0, 0.0)))
NOTCH_MIN_ELEVATION_DEG = 5.0
#: The notch example's pass (42846 over Hawaii South Point), seconds after DAY_START.
NOTCH_PASS_S = (5900.0, 6500.0)
DAY_START = datetime(2026, 8, 16, tzinfo=UTC)
RANDOM_CASES = 50
RANDOM_SEED = 20260816
RANDOM_MIN_ELEVATION_DEG = 10.0
#: Random cases are drawn from objects faster than this (rev/day): not near-geostationary.
MIN_REV_PER_DAY = 1.5


def timescale() -> Timescale:
    # ΔT = TT − UTC (69.184 s in 2026) makes UT1 = UTC, which groundplane assumes (no UT1 table).
    return sf_load.timescale(builtin=True, delta_t=69.184)


def satellites() -> tuple[list[str], list[Satrec]]:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    ids = [lines[i + 1][2:7].strip() for i in range(0, len(lines) - 2, 3)]
    sats = [Satrec.twoline2rv(lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)]
    return ids, sats


def stations(min_elevation_deg: float, mask: HorizonMask | None = None) -> list[Site]:
    with (DATA / "ground-stations.csv").open() as handle:
        return [
            Site(
                r[0],
                float(r[2]),
                float(r[3]),
                float(r[4]),
                name=r[1],
                min_elevation_deg=min_elevation_deg,
                mask=mask or HorizonMask(),
            )
            for r in csv.reader(handle)
        ]


@dataclass
class Sky:
    """Skyfield's view of one satellite from one site."""

    ts: Timescale
    satellite: EarthSatellite
    site: Site
    start: Time

    @classmethod
    def of(cls, satrec: Satrec, site: Site, start: datetime) -> Sky:
        ts = timescale()
        return cls(ts, EarthSatellite.from_satrec(satrec, ts), site, ts.from_datetime(start))

    def at(self, seconds: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Elevation and azimuth (deg) at ``seconds`` after the start."""
        topos = wgs84.latlon(self.site.lat_deg, self.site.lon_deg, elevation_m=self.site.alt_m)
        t = self.ts.tt_jd(self.start.tt + np.asarray(seconds) / 86400.0)
        alt, az, _ = (self.satellite - topos).at(t).altaz()
        return np.asarray(alt.degrees), np.asarray(az.degrees)

    def margin(self, seconds: NDArray[np.float64]) -> NDArray[np.float64]:
        """Elevation above the effective threshold ``max(min elevation, mask(azimuth))``."""
        el, az = self.at(seconds)
        return el - np.asarray(self.site.threshold_deg(az))

    def crossings(self, t0_s: float, t1_s: float, step_s: float = 1.0) -> list[tuple[float, int]]:
        """Effective-threshold crossings in ``[t0, t1]``: a fine grid, then bisection (1 µs)."""
        grid = np.arange(t0_s, t1_s + step_s, step_s)
        up = self.margin(grid) > 0
        at = np.flatnonzero(up[1:] != up[:-1])
        lo, hi = grid[at], grid[at + 1]
        rising = up[at + 1]
        for _ in range(20):
            mid = 0.5 * (lo + hi)
            above = self.margin(mid) > 0
            lo, hi = np.where(above == rising, lo, mid), np.where(above == rising, mid, hi)
        return [(float(x), 1 if r else -1) for x, r in zip(0.5 * (lo + hi), rising, strict=True)]

    def events(self, stop: datetime, altitude_deg: float) -> tuple[list[float], list[float]]:
        """Rises and sets from Skyfield ``find_events`` (seconds after the start)."""
        topos = wgs84.latlon(self.site.lat_deg, self.site.lon_deg, elevation_m=self.site.alt_m)
        t, kinds = self.satellite.find_events(
            topos, self.start, self.ts.from_datetime(stop), altitude_degrees=altitude_deg
        )
        seconds = (t.tt - self.start.tt) * 86400.0
        rises = [float(s) for s, e in zip(seconds, kinds, strict=True) if e == 0]
        sets = [
            float(s) for s, e in zip(seconds, kinds, strict=True) if e == 2
        ]  # Skyfield's code for a set
        return rises, sets


def assert_edge(sky: Sky, ours_s: float, ref_s: float, label: str) -> None:
    """Our edge is within ``EDGE_TOL_S`` of the reference, or at the threshold within
    ``EDGE_TOL_DEG`` by Skyfield's own elevation."""
    if abs(ours_s - ref_s) <= EDGE_TOL_S:
        return
    margin = float(sky.margin(np.array([ours_s]))[0])
    assert abs(margin) <= EDGE_TOL_DEG, (label, ours_s, ref_s, margin)


def batch_of(*catalog_ids: str) -> SatelliteBatch:
    ids, sats = satellites()
    return SatelliteBatch(list(catalog_ids), [sats[ids.index(c)] for c in catalog_ids])


def rows_of(table: PassTable, sat: int, site: int) -> NDArray[np.intp]:
    return np.flatnonzero((table.sat_index == sat) & (table.site_index == site))


def test_mask_notch_splits_a_pass_into_two_that_match_skyfield() -> None:
    """CORVUS BC2 (42846) over Hawaii South Point (2026-08-16 ~01:40 UTC) with a 25° mask notch
    at azimuth 90° and 5° elsewhere: the satellite rises, goes behind the notch for ~44 s and
    comes back (the search used to report one pass across the notch: the dip fell between two
    coarse samples where the elevation was rising). The search reports two passes, each with
    its own AOS/LOS/max elevation and azimuths, whose four edges match Skyfield's
    effective-threshold crossings within 1 s; in the gap Skyfield has the satellite above 5°
    but below the mask, and without the mask the same satellite makes one pass."""
    ids, sats = satellites()
    index = ids.index("42846")
    masked = stations(NOTCH_MIN_ELEVATION_DEG, NOTCH)[9]
    assert masked.name == "Hawaii South Point"
    # A half-day search (the grid phase under which the old search merged the two parts).
    table = find_pass_table(batch_of("42846"), [masked], DAY_START, DAY_START + timedelta(hours=12))
    rows = np.flatnonzero((table.aos_s > NOTCH_PASS_S[0]) & (table.los_s < NOTCH_PASS_S[1]))
    assert rows.size == 2, table  # the two parts of the interrupted pass
    sky = Sky.of(sats[index], masked, DAY_START)
    ref = sky.crossings(*NOTCH_PASS_S)
    assert [kind for _, kind in ref] == [1, -1, 1, -1], ref
    first, second = rows
    ours = [table.aos_s[first], table.los_s[first], table.aos_s[second], table.los_s[second]]
    for mine, (theirs, _) in zip(ours, ref, strict=True):
        assert abs(mine - theirs) < EDGE_TOL_S, (ours, ref)
    gap_s = table.aos_s[second] - table.los_s[first]
    assert 20.0 < gap_s < 60.0, gap_s  # "some tens of seconds" behind the notch
    inside_gap = np.linspace(table.los_s[first] + 1.0, table.aos_s[second] - 1.0, 20)
    assert (sky.margin(inside_gap) < 0).all()
    el_gap, _ = sky.at(inside_gap)
    assert (el_gap > NOTCH_MIN_ELEVATION_DEG).all()  # above the minimum, only the mask hides it
    # Each part has its own culmination and edge azimuths: the LOS of the first and the AOS of
    # the second are on the notch's flanks, either side of 90°.
    assert table.los_azimuth_deg[first] < 90.0 < table.aos_azimuth_deg[second]  # the notch
    for row in rows:
        assert table.aos_s[row] <= table.tca_s[row] <= table.los_s[row]
        grid = np.linspace(table.aos_s[row], table.los_s[row], 400)
        el, _ = sky.at(grid)
        assert abs(table.max_elevation_deg[row] - el.max()) < 0.05  # 400 samples
    plain = Site(masked.id, masked.lat_deg, masked.lon_deg, masked.alt_m, min_elevation_deg=5.0)
    whole = find_pass_table(batch_of("42846"), [plain], DAY_START, DAY_START + timedelta(hours=12))
    (one,) = np.flatnonzero(
        (whole.aos_s < table.los_s[first]) & (whole.los_s > table.aos_s[second])
    )
    assert whole.aos_s[one] < table.aos_s[first] + EDGE_TOL_S
    assert whole.los_s[one] > table.los_s[second] - EDGE_TOL_S


@pytest.mark.parametrize(
    ("catalog_id", "site_index"),
    [
        ("27858", 4),  # 107 s pass peaking at 10.6°: LOS was 12 s late
        ("43189", 3),  # 79 s pass peaking at 10.4°: AOS was 6.8 s late
        ("61772", 4),  # 10 s grazing pass peaking 0.016° over 10°: was missed
    ],
)
def test_short_low_passes_have_edges_within_tolerance_of_skyfield(
    catalog_id: str, site_index: int
) -> None:
    """Short passes that barely clear a 10° threshold (the issue's 8–11 s and 1.6 s cases, found
    again in the shared data): every Skyfield ``find_events`` rise and set of the day has our
    AOS/LOS within 1 s (or 0.01° of elevation), none missed, none extra."""
    ids, sats = satellites()
    index = ids.index(catalog_id)
    site = stations(RANDOM_MIN_ELEVATION_DEG)[site_index]
    stop = DAY_START + timedelta(days=1)
    table = find_pass_table(SatelliteBatch([catalog_id], [sats[index]]), [site], DAY_START, stop)
    compare_day(table, 0, 0, Sky.of(sats[index], site, DAY_START), stop, catalog_id)


def compare_day(  # noqa: PLR0917 - the table, the pair, its reference and the label
    table: PassTable, sat: int, site: int, sky: Sky, stop: datetime, label: str
) -> int:
    """Rises and sets of ``find_events`` against our unclipped AOS/LOS; returns the edge count."""
    rises, sets = sky.events(stop, RANDOM_MIN_ELEVATION_DEG)
    rows = rows_of(table, sat, site)
    aos = table.aos_s[rows][~table.aos_clipped[rows]]
    los = table.los_s[rows][~table.los_clipped[rows]]
    assert len(aos) == len(rises), (label, aos, rises)
    assert len(los) == len(sets), (label, los, sets)
    for mine, theirs in zip([*aos, *los], [*rises, *sets], strict=True):
        assert abs(mine - theirs) < MATCH_S, (label, mine, theirs)
        assert_edge(sky, float(mine), theirs, label)
    return len(rises) + len(sets)


def test_fifty_random_satellite_site_days_match_skyfield_find_events() -> None:
    """50 (satellite, station) pairs drawn with a fixed seed from the shared 3LE catalog (objects
    faster than 1.5 rev/day: ``find_events`` misses near-geostationary rises and sets, see the
    next test) × the shared ground stations, one day each at a 10° minimum elevation, all
    searched in one call: same number of rises and sets as Skyfield ``find_events`` (0 missed,
    0 extra), every AOS/LOS within 1 s (or 0.01° of elevation)."""
    ids, sats = satellites()
    sites = stations(RANDOM_MIN_ELEVATION_DEG)
    rng = np.random.default_rng(RANDOM_SEED)
    rev_per_day = np.array([s.no_kozai for s in sats]) * 1440.0 / (2.0 * np.pi)
    eligible = np.flatnonzero(rev_per_day > MIN_REV_PER_DAY)
    sat_pick = rng.choice(eligible, RANDOM_CASES, replace=False)
    site_pick = rng.integers(0, len(sites), RANDOM_CASES)
    stop = DAY_START + timedelta(days=1)
    batch = SatelliteBatch([ids[i] for i in sat_pick], [sats[i] for i in sat_pick])
    table = find_pass_table(batch, sites, DAY_START, stop)
    edges = 0
    for j, (i, k) in enumerate(zip(sat_pick.tolist(), site_pick.tolist(), strict=True)):
        sky = Sky.of(sats[i], sites[k], DAY_START)
        edges += compare_day(table, j, k, sky, stop, f"{ids[i]}@{sites[k].id}")
    assert edges > 100  # the draw holds LEO pairs with several passes a day


def test_geostationary_edges_match_skyfield_elevation_where_find_events_has_none() -> None:
    """A near-geostationary object (41105, 1.0027 rev/day) hovering at 10° over Dongara: the
    search reports a set 260 s into the day and a rise at 4.3 h; Skyfield ``find_events``
    reports nothing, but Skyfield's own elevation crosses 10° at both edges within 1 s (the
    fine-grid reference), so the events are real."""
    ids, sats = satellites()
    index = ids.index("41105")
    site = stations(RANDOM_MIN_ELEVATION_DEG)[3]
    stop = DAY_START + timedelta(days=1)
    table = find_pass_table(SatelliteBatch(["41105"], [sats[index]]), [site], DAY_START, stop)
    sky = Sky.of(sats[index], site, DAY_START)
    assert sky.events(stop, RANDOM_MIN_ELEVATION_DEG) == ([], [])
    ref = sky.crossings(0.0, 86400.0, step_s=10.0)
    assert [kind for _, kind in ref] == [-1, 1], ref
    assert len(table) == 2  # clipped at the start, then clipped at the end
    assert table.aos_clipped[0]
    assert table.los_clipped[1]
    assert abs(table.los_s[0] - ref[0][0]) < EDGE_TOL_S
    assert abs(table.aos_s[1] - ref[1][0]) < EDGE_TOL_S
