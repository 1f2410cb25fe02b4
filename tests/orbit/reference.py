"""Independent brute-force pass reference for the tests (slow on purpose, written separately).

One satellite and one site at a time: SGP4 sampled every ``step_s`` seconds with
``Satrec.sgp4_array``, its own TEME→ITRF rotation matrices and its own topocentric maths
(ellipsoid normal by dot products), AOS/LOS by bisection on direct scalar SGP4 calls, culminations
by golden-section search. It shares no code with ``groundplane.orbit.geometry``/``passes``
apart from :meth:`Site.threshold_deg` (the definition of the threshold).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from sgp4.api import Satrec

from groundplane.orbit.sites import Site

_A = 6378.137
_F = 1 / 298.257223563
_OMEGA = 7.292115146706979e-5


@dataclass(frozen=True)
class RefPass:
    aos: datetime
    tca: datetime
    los: datetime
    max_elevation_deg: float
    aos_clipped: bool
    los_clipped: bool


def _jd(moment: datetime) -> tuple[float, float]:
    delta = moment - datetime(2000, 1, 1, 12, tzinfo=UTC)
    days = delta.days + (delta.seconds + delta.microseconds / 1e6) / 86400.0
    whole = math.floor(days)
    return 2451545.0 + whole, days - whole


def _gmst(jd: NDArray[np.float64], fr: NDArray[np.float64]) -> NDArray[np.float64]:
    tu = (jd + fr - 2451545.0) / 36525.0
    sec = 67310.54841 + (876600.0 * 3600 + 8640184.812866) * tu + 0.093104 * tu**2 - 6.2e-6 * tu**3
    return np.remainder(np.deg2rad(sec / 240.0), 2 * np.pi)


class _Observer:
    def __init__(self, site: Site) -> None:
        lat, lon = math.radians(site.lat_deg), math.radians(site.lon_deg)
        e2 = 2 * _F - _F * _F
        n = _A / math.sqrt(1 - e2 * math.sin(lat) ** 2)
        h = site.alt_m / 1000.0
        self.site = site
        self.pos = np.array(
            [
                (n + h) * math.cos(lat) * math.cos(lon),
                (n + h) * math.cos(lat) * math.sin(lon),
                (n * (1 - e2) + h) * math.sin(lat),
            ]
        )
        self.zenith = np.array(
            [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]
        )
        north_pole = np.array([0.0, 0.0, 1.0])
        east = np.cross(north_pole, self.zenith)
        if np.linalg.norm(east) < 1e-12:  # at a pole, pick the prime meridian's east
            east = np.array([-math.sin(lon), math.cos(lon), 0.0])
        self.east = east / np.linalg.norm(east)
        self.north = np.cross(self.zenith, self.east)

    def el_az(
        self, r_teme: NDArray[np.float64], jd: NDArray[np.float64], fr: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        theta = _gmst(jd, fr)
        cos_t, sin_t = np.cos(theta), np.sin(theta)
        # ITRF = Rz(θ) · TEME (rotation matrix applied row by row).
        mats = np.zeros((theta.size, 3, 3))
        mats[:, 0, 0], mats[:, 0, 1] = cos_t, sin_t
        mats[:, 1, 0], mats[:, 1, 1] = -sin_t, cos_t
        mats[:, 2, 2] = 1.0
        itrf = np.einsum("tij,tj->ti", mats, r_teme)
        los = itrf - self.pos
        dist = np.linalg.norm(los, axis=1)
        el = np.degrees(np.arcsin(np.clip(los @ self.zenith / dist, -1, 1)))
        az = np.degrees(np.arctan2(los @ self.east, los @ self.north)) % 360.0
        return el, az

    def f(
        self, satrec: Satrec, jd: NDArray[np.float64], fr: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        err, r, _ = satrec.sgp4_array(jd, fr)
        r = np.where((np.asarray(err) == 0)[:, None], r, np.nan)
        el, az = self.el_az(r, jd, fr)
        f = el - np.asarray(self.site.threshold_deg(az))
        return np.where(np.isfinite(f), f, -1e9), el


def brute_force_passes(
    satrec: Satrec, site: Site, start: datetime, stop: datetime, step_s: float = 2.0
) -> list[RefPass]:
    """Passes of one satellite over one site by fine sampling + bisection + golden section."""
    obs = _Observer(site)
    jd0, fr0 = _jd(start)
    total = (stop - start).total_seconds()
    offsets = np.arange(0.0, total, step_s)
    offsets = np.append(offsets, total)

    def at(sec: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return obs.f(satrec, np.full(sec.shape, jd0), fr0 + sec / 86400.0)

    def f1(sec: float) -> float:
        return float(at(np.array([sec]))[0][0])

    def el1(sec: float) -> float:
        return float(at(np.array([sec]))[1][0])

    f, _el = at(offsets)

    def bisect(a: float, b: float, rising: bool) -> float:
        for _ in range(40):
            mid = 0.5 * (a + b)
            if (f1(mid) > 0) == rising:
                b = mid
            else:
                a = mid
            if b - a < 1e-4:
                break
        return 0.5 * (a + b)

    def golden_max(fn: Callable[[float], float], a: float, b: float) -> float:
        g = (math.sqrt(5) - 1) / 2
        c, d = b - g * (b - a), a + g * (b - a)
        fc, fd = fn(c), fn(d)
        while b - a > 1e-3:
            if fc > fd:
                b, d, fd = d, c, fc
                c = b - g * (b - a)
                fc = fn(c)
            else:
                a, c, fc = c, d, fd
                d = a + g * (b - a)
                fd = fn(d)
        return 0.5 * (a + b)

    # Crossings of f on the fine grid, plus hidden maxima between samples found by golden section
    # around each discrete local maximum that is below zero.
    events: list[tuple[float, int]] = []
    up = f > 0
    for i_crossing in np.flatnonzero(up[1:] != up[:-1]):
        i = int(i_crossing)
        rising = bool(up[i + 1])
        events.append(
            (bisect(float(offsets[i]), float(offsets[i + 1]), rising), 1 if rising else -1)
        )
    for j in range(1, f.size - 1):
        i = int(j)
        if f[i] <= 0 and f[i] >= f[i - 1] and f[i] >= f[i + 1] and f[i] > -0.5:
            a, b = float(offsets[i - 1]), float(offsets[i + 1])
            tm = golden_max(f1, a, b)
            if f1(tm) > 0:
                events.append((bisect(a, tm, True), 1))
                events.append((bisect(tm, b, False), -1))
    events.sort()
    if up[0]:
        events.insert(0, (0.0, 1))
    if up[-1]:
        events.append((total, -1))
    passes: list[RefPass] = []
    for (t_aos, k_aos), (t_los, k_los) in zip(events[::2], events[1::2], strict=False):
        assert k_aos == 1, "reference events must alternate"
        assert k_los == -1, "reference events must alternate"
        inside = (offsets > t_aos) & (offsets < t_los)
        cands = [t_aos, t_los] + [float(x) for x in offsets[inside]]
        best = max(cands, key=el1)
        if t_aos < best < t_los:
            best = golden_max(el1, max(t_aos, best - step_s), min(t_los, best + step_s))
        passes.append(
            RefPass(
                aos=start + timedelta(seconds=t_aos),
                tca=start + timedelta(seconds=best),
                los=start + timedelta(seconds=t_los),
                max_elevation_deg=el1(best),
                aos_clipped=t_aos == 0.0,
                los_clipped=t_los == total,
            )
        )
    return passes
