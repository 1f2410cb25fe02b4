"""Benchmark: passes of 636 satellites × 12 ground stations × 24 h vs Skyfield's find_events.

Run: .venv/bin/python bench/passes.py

Reference, measured in the same run: Skyfield ``EarthSatellite.find_events`` (altitude 0°) on a
subset (60 satellites × 12 sites × 24 h), scaled per satellite-site-day to the whole work. Also
counts passes our search found that Skyfield's event list lacks (a rise/set pair missing).
"""

from __future__ import annotations

import csv
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sgp4.api import Satrec
from skyfield.api import EarthSatellite, wgs84
from skyfield.api import load as sf_load

from groundplane.orbit.geometry import SatelliteBatch, SiteFrames
from groundplane.orbit.passes import find_pass_table
from groundplane.orbit.sites import Site

#: The repository's data files (data/README.md).
DATA = Path(__file__).resolve().parents[1] / "data"
SUBSET = 60


def load() -> tuple[SatelliteBatch, list[Site]]:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    ids = [lines[i + 1][2:7].strip() for i in range(0, len(lines) - 2, 3)]
    sats = [Satrec.twoline2rv(lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)]
    with (DATA / "ground-stations.csv").open() as handle:
        sites = [
            Site(r[0], float(r[2]), float(r[3]), float(r[4]), name=r[1]) for r in csv.reader(handle)
        ]
    return SatelliteBatch(ids, sats), sites


def main() -> None:

    batch, sites = load()
    frames = SiteFrames(sites)
    start = datetime(2026, 8, 16, tzinfo=UTC)
    stop = start + timedelta(days=1)
    runs: list[float] = []
    table = None
    for _ in range(5):
        t0 = time.perf_counter()
        table = find_pass_table(batch, frames, start, stop)
        runs.append(time.perf_counter() - t0)
    assert table is not None
    t0 = time.perf_counter()
    table.passes()
    objects_s = time.perf_counter() - t0
    ours = statistics.median(runs)
    work = len(batch) * len(sites)

    ts = sf_load.timescale(builtin=True, delta_t=69.184)
    t_start, t_stop = ts.from_datetime(start), ts.from_datetime(stop)
    rng = np.random.default_rng(3)
    subset = sorted(rng.choice(len(batch), SUBSET, replace=False).tolist())
    missed = 0
    checked = 0
    t0 = time.perf_counter()
    sky_rises: dict[tuple[int, int], list[float]] = {}
    for i in subset:
        sat = EarthSatellite.from_satrec(batch.satrecs[i], ts)
        for k, site in enumerate(sites):
            topos = wgs84.latlon(site.lat_deg, site.lon_deg, elevation_m=site.alt_m)
            t, kinds = sat.find_events(topos, t_start, t_stop, altitude_degrees=0.0)
            sky_rises[(i, k)] = [
                (tt - t_start.tt) * 86400.0 for tt, e in zip(t.tt, kinds, strict=True) if e == 0
            ]
    sky_s = time.perf_counter() - t0
    for (i, k), rises in sky_rises.items():
        rows = (table.sat_index == i) & (table.site_index == k) & ~table.aos_clipped
        for aos in table.aos_s[rows]:
            checked += 1
            if not rises or min(abs(r - aos) for r in rises) > 5.0:
                missed += 1
    sky_per = sky_s / (SUBSET * len(sites))
    sky_full = sky_per * work
    print(f"work: {len(batch)} satellites × {len(sites)} sites × 24 h = {work} satellite-site-days")
    print(
        f"ours: median {ours * 1e3:.0f} ms, best {min(runs) * 1e3:.0f} ms, "
        f"{len(table)} passes ({ours / work * 1e6:.0f} µs per satellite-site-day); "
        f"building Pass objects adds {objects_s * 1e3:.0f} ms"
    )
    print(
        f"Skyfield find_events: {sky_s:.2f} s for {SUBSET}×{len(sites)} = "
        f"{sky_per * 1e3:.2f} ms per satellite-site-day → {sky_full:.1f} s scaled to the work"
    )
    print(
        f"speed-up: {sky_full / ours:.0f}× (median), {sky_full / min(runs):.0f}× (best); "
        "target ≥ 30×"
    )
    print(
        f"passes we found (not clipped) in the subset: {checked}; "
        f"without a Skyfield rise within 5 s: {missed}"
    )


if __name__ == "__main__":
    main()
