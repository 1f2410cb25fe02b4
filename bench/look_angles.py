"""Benchmark: look angles for 636 satellites × 12 sites × 1440 times vs raw SatrecArray.sgp4.

Run: .venv/bin/python bench/look_angles.py

Reference, measured in the same run: ``SatrecArray.sgp4`` of the same 636 satellites × 1440
times (propagation only). Target: look angles for all 12 sites within 2× of that.
Both are timed warm (repeated calls; the first call of a process also pays page faults for the
≈350 MB of float64 output, reported separately).
"""

from __future__ import annotations

import csv
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from sgp4.api import Satrec

from groundplane.orbit.geometry import (
    SatelliteBatch,
    SiteFrames,
    look_angles,
    utc_jd_fr_range,
)
from groundplane.orbit.sites import Site

#: The repository's data files (data/README.md).
DATA = Path(__file__).resolve().parents[1] / "data"


def load() -> tuple[SatelliteBatch, SiteFrames]:
    lines = (DATA / "satellites-2026-08.3le").read_text().splitlines()
    ids = [lines[i + 1][2:7].strip() for i in range(0, len(lines) - 2, 3)]
    sats = [Satrec.twoline2rv(lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)]
    with (DATA / "ground-stations.csv").open() as handle:
        sites = [
            Site(r[0], float(r[2]), float(r[3]), float(r[4]), name=r[1]) for r in csv.reader(handle)
        ]
    return SatelliteBatch(ids, sats), SiteFrames(sites)


def main() -> None:
    batch, frames = load()
    jd, fr = utc_jd_fr_range(
        datetime(2026, 8, 16, tzinfo=UTC), datetime(2026, 8, 16, 23, 59, tzinfo=UTC), 60.0
    )
    assert batch.array is not None
    t0 = time.perf_counter()
    look_angles(batch, frames, jd, fr)
    cold = time.perf_counter() - t0
    raw: list[float] = []
    looks: list[float] = []
    reused: list[float] = []
    buffers = look_angles(batch, frames, jd, fr)
    for _ in range(7):
        t0 = time.perf_counter()
        batch.array.sgp4(jd, fr)
        raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        look_angles(batch, frames, jd, fr)
        looks.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        look_angles(batch, frames, jd, fr, out=buffers)
        reused.append(time.perf_counter() - t0)
    n = len(batch) * jd.size
    raw_s, look_s = statistics.median(raw), statistics.median(looks)
    print(f"work: {len(batch)} satellites × {len(frames)} sites × {jd.size} times")
    print(
        f"raw SatrecArray.sgp4 ({len(batch)}×{jd.size}): median {raw_s * 1e3:.0f} ms "
        f"({raw_s / n * 1e9:.0f} ns per satellite-time)"
    )
    print(
        f"look_angles (propagation + {len(frames)} sites): median {look_s * 1e3:.0f} ms, "
        f"best {min(looks) * 1e3:.0f} ms; first (cold) call {cold * 1e3:.0f} ms"
    )
    reuse_s = statistics.median(reused)
    print(
        f"look_angles reusing output buffers (out=): median {reuse_s * 1e3:.0f} ms, "
        f"best {min(reused) * 1e3:.0f} ms"
    )
    print(
        f"ratio look_angles / raw propagation: fresh arrays median {look_s / raw_s:.2f}× "
        f"(best {min(looks) / min(raw):.2f}×); reused buffers median {reuse_s / raw_s:.2f}× "
        f"(best {min(reused) / min(raw):.2f}×) (target ≤ 2×)"
    )
    print(
        f"topocentric cost: {(reuse_s - raw_s) / (n * len(frames)) * 1e9:.1f} ns per "
        "satellite-site-time"
    )


if __name__ == "__main__":
    main()
