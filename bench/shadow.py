"""Benchmark: the sunlit-fraction cost of one visibility tick at 10,000 satellites.

Run: .venv/bin/python bench/shadow.py

Satellites: the synthetic 10,000 of ``bench/visibility.py`` (a 550 km / 53° Walker-like shell plus
1,000 polar satellites); sites: its 1,000 spread over the globe. Per tick (one instant), measured
in the same run: the Sun's position plus :func:`sunlit_fraction` for every satellite (on the
TEME positions the tick's propagation already produced), against the references the tick pays
anyway — the raw ``SatrecArray.sgp4`` call at that instant and the whole visibility tick. Also
the same for a 60-instant chunk (a one-minute stream at 1 s) to show the per-instant cost.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from visibility import synthetic_batch, synthetic_sites

from groundplane.orbit.geometry import SiteFrames, offset_jd_fr, utc_jd_fr
from groundplane.orbit.shadow import sun_position_teme_km, sunlit_fraction
from groundplane.orbit.visibility import visibility

ROUNDS = 9


def main() -> None:
    batch = synthetic_batch()
    frames = SiteFrames(synthetic_sites())
    assert batch.array is not None
    base = datetime(2026, 8, 21, 12, tzinfo=UTC)
    sgp4_s: list[float] = []
    shadow_s: list[float] = []
    tick_s: list[float] = []
    chunk_sgp4_s: list[float] = []
    chunk_shadow_s: list[float] = []
    lit = np.zeros(0)
    for round_index in range(ROUNDS):
        jd, fr = utc_jd_fr(base + timedelta(seconds=17 * round_index))
        t0 = time.perf_counter()
        _, r, _ = batch.array.sgp4(jd, fr)
        t1 = time.perf_counter()
        lit = sunlit_fraction(r, sun_position_teme_km(jd, fr))
        t2 = time.perf_counter()
        visibility(batch, frames, float(jd[0]), float(fr[0]))
        t3 = time.perf_counter()
        sgp4_s.append(t1 - t0)
        shadow_s.append(t2 - t1)
        tick_s.append(t3 - t2)
        jd60, fr60 = offset_jd_fr(float(jd[0]), float(fr[0]), np.arange(60.0))
        t0 = time.perf_counter()
        _, r60, _ = batch.array.sgp4(jd60, fr60)
        t1 = time.perf_counter()
        sunlit_fraction(r60, sun_position_teme_km(jd60, fr60))
        t2 = time.perf_counter()
        chunk_sgp4_s.append(t1 - t0)
        chunk_shadow_s.append(t2 - t1)
    shadow = statistics.median(shadow_s)
    sgp4 = statistics.median(sgp4_s)
    tick = statistics.median(tick_s)
    print(f"satellites: {len(batch)}; sites in the visibility tick: {len(frames)}")
    print(
        f"sunlit at the last tick: {int(np.sum(lit == 1.0))} full Sun, "
        f"{int(np.sum((lit > 0) & (lit < 1)))} penumbra, {int(np.sum(lit == 0.0))} umbra"
    )
    print(f"Sun + sunlit_fraction, one instant: median {shadow * 1e3:.2f} ms")
    print(
        f"  reference raw SatrecArray.sgp4, same instant: {sgp4 * 1e3:.2f} ms "
        f"(shadow/sgp4 = {shadow / sgp4:.2f}×)"
    )
    print(
        f"  reference visibility tick ({len(frames)} sites): {tick * 1e3:.1f} ms "
        f"(shadow adds {shadow / tick * 100:.1f} %)"
    )
    c_shadow = statistics.median(chunk_shadow_s)
    c_sgp4 = statistics.median(chunk_sgp4_s)
    print(
        f"60 instants × {len(batch)}: Sun + sunlit_fraction {c_shadow * 1e3:.1f} ms "
        f"({c_shadow / 60 * 1e3:.2f} ms per instant), raw sgp4 {c_sgp4 * 1e3:.1f} ms "
        f"(shadow/sgp4 = {c_shadow / c_sgp4:.2f}×)"
    )


if __name__ == "__main__":
    main()
