"""Benchmark: one visibility tick for 10,000 synthetic satellites × 1,000 sites.

Run: .venv/bin/python bench/visibility.py

Satellites: a Walker-like shell at 550 km / 53° (90 planes × 100) plus 1,000 polar satellites at
560 km / 97.6°, built with ``Satrec.sgp4init``. Sites: 1,000 points spread uniformly over the
globe, 10° minimum elevation, every tenth with a terrain mask. Reference in the same run: the raw
``SatrecArray.sgp4`` call for the same satellites at the one instant (targets: a tick ≤ 100 ms
and ≤ 20× that call). Three ticks are timed, interleaved with the reference: the visible set
with look angles only (``los=False``); the full tick with a time to LOS for every visible pair
(which propagates the visible satellites a few coarse steps ahead); and the full tick given the
previous tick's result (17 s earlier), as a stream of ticks runs: pairs that stayed visible keep
their LOS, only new passes are swept.
"""

from __future__ import annotations

import math
import statistics
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from sgp4.api import WGS72, Satrec

from groundplane.orbit.geometry import SatelliteBatch, SiteFrames, utc_jd_fr
from groundplane.orbit.sites import HorizonMask, Site
from groundplane.orbit.visibility import Visibility, visibility

EPOCH_DAYS_SINCE_1949_12_31 = 27_990.0  # 2026-08-21


def synthetic_batch() -> SatelliteBatch:
    satrecs: list[Satrec] = []
    ids: list[str] = []

    def add(alt_km: float, inc_deg: float, raan_deg: float, anomaly_deg: float) -> None:
        a_er = (6378.135 + alt_km) / 6378.135
        n_rad_min = math.sqrt(1.0 / a_er**3) * 0.0743669161  # rad/min (WGS72 ke)
        sat = Satrec()
        sat.sgp4init(
            WGS72,
            "i",
            len(satrecs) + 1,
            EPOCH_DAYS_SINCE_1949_12_31,
            2.0e-5,
            0.0,
            0.0,
            1.0e-4,
            math.radians(90.0),
            math.radians(inc_deg),
            math.radians(anomaly_deg),
            n_rad_min,
            math.radians(raan_deg),
        )
        satrecs.append(sat)
        ids.append(f"SYN-{len(satrecs):05d}")

    for plane in range(90):
        for slot in range(100):
            add(550.0, 53.0, plane * 4.0, slot * 3.6 + plane * 0.9)
    for plane in range(10):
        for slot in range(100):
            add(560.0, 97.6, plane * 18.0 + 2.0, slot * 3.6)
    return SatelliteBatch(ids, satrecs)


def synthetic_sites(count: int = 1000) -> list[Site]:
    rng = np.random.default_rng(7)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, count)))
    lon = rng.uniform(-180, 180, count)
    mask = HorizonMask(((0.0, 15.0), (90.0, 5.0), (180.0, 20.0), (270.0, 8.0)))
    return [
        Site(
            f"site-{i}",
            float(la),
            float(lo),
            100.0,
            min_elevation_deg=10.0,
            mask=mask if i % 10 == 0 else HorizonMask(),
        )
        for i, (la, lo) in enumerate(zip(lat, lon, strict=True))
    ]


def main() -> None:
    batch = synthetic_batch()
    frames = SiteFrames(synthetic_sites())
    base = datetime(2026, 8, 21, 12, tzinfo=UTC)
    raw: list[float] = []
    ticks: list[float] = []
    looks: list[float] = []
    warm: list[float] = []
    result: Visibility | None = None
    for tick in range(9):
        jd, fr = utc_jd_fr(base + timedelta(seconds=17 * tick))
        assert batch.array is not None
        t0 = time.perf_counter()
        batch.array.sgp4(jd, fr)
        raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        visibility(batch, frames, float(jd[0]), float(fr[0]), los=False)
        looks.append(time.perf_counter() - t0)
        previous = result
        t0 = time.perf_counter()
        result = visibility(batch, frames, float(jd[0]), float(fr[0]))
        ticks.append(time.perf_counter() - t0)
        if previous is not None:
            t0 = time.perf_counter()
            visibility(batch, frames, float(jd[0]), float(fr[0]), previous=previous)
            warm.append(time.perf_counter() - t0)
    assert result is not None
    raw_s = statistics.median(raw)
    finite = np.isfinite(result.los_in_s)
    print(f"satellites × sites: {len(batch)} × {len(frames)}")
    print(
        f"visible pairs: {len(result)} (LOS found for {int(finite.sum())}; "
        f"median time to LOS {np.median(result.los_in_s[finite]):.0f} s)"
    )
    print(f"raw SatrecArray.sgp4 at one instant: median {raw_s * 1e3:.2f} ms")
    for label, values in (
        ("visible set + look angles", looks),
        ("full tick with LOS", ticks),
        ("full tick with LOS, previous tick (17 s earlier) given", warm),
    ):
        median = statistics.median(values)
        print(
            f"{label}: median {median * 1e3:.1f} ms, best {min(values) * 1e3:.1f} ms "
            f"({median / raw_s:.1f}× one raw SGP4 instant; targets 100 ms and 20×)"
        )


if __name__ == "__main__":
    main()
