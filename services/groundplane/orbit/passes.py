"""Pass prediction: when each satellite is above each site's threshold, over a time window.

The function searched is ``f(t) = elevation(t) − threshold(azimuth(t))`` with
``threshold = max(site min elevation, mask(azimuth))``; a pass is a maximal interval with
``f > 0``.

Algorithm (everything vectorised over satellites × sites; no loop over satellite × time):

1. Satellites are grouped by a coarse step chosen from their fastest angular motion
   (``n (1+e)² / (1−e²)^{3/2}``, so eccentric orbits are sampled for their perigee); each group
   is propagated on its own uniform grid in one ``SatrecArray.sgp4`` call.
2. On the grid only the signs of ``f`` and ``f'`` (from the ITRF velocity) are needed. For
   unmasked sites they come without arctangents or divisions, all sites at once, and only
   where the satellite can reach the site's horizon plane within a step (footprint pruning:
   ``|du/dt| ≤ |v|``); values are computed at the ends of the intervals kept. Masked sites get
   ``f`` and its azimuth on the whole grid.
3. The threshold is linear in azimuth between the mask's kinks (its points, and where it crosses
   the minimum elevation), so ``f`` is smooth between kinks and only continuous at them. Grid
   intervals whose azimuth sweeps over a kink while the elevation is within the mask's band are
   cut at the kink-crossing times into *pieces*; every other interval is one piece. A dip behind
   a mask notch (a local minimum of ``f``, at a kink) thus ends one pass, and the rise after it
   starts the next.
4. A piece with a sign change of ``f`` holds an AOS or LOS. A piece where ``f ≤ 0`` at both
   ends but ``f'`` goes from + to − holds a local maximum: it is located and, if positive,
   yields a short (grazing) pass. The symmetric case (a dip below the threshold between two
   visible ends) is handled the same way.
5. The pieces of every group and site are refined together: roots and extrema by a bracketed
   solver (Newton or Illinois steps, bisection whenever a step leaves the bracket), run to
   convergence (20 ms; extrema 0.1 s) on the exact geometry of the cubic-Hermite interpolated
   TEME state (position and velocity at both grid ends). Convergence matters for short low
   passes, whose culmination shares a coarse interval with their AOS or LOS: ``f`` is not
   monotone there and Newton alone leaves the bracket. Each AOS/LOS then takes one Newton step
   on the exact SGP4 state (one ``sgp4_array`` call per satellite), which removes the
   interpolation error (tens of metres at the pass search's steps).
6. TCA is the highest elevation maximum inside the pass (several culminations → the highest;
   a part of a split pass without an interior maximum culminates at its higher edge).

Known limit: kinks are searched only where the elevation is within the mask's band (plus what
it can gain between samples), and a dip shorter than the solver's tolerance is not resolved.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from groundplane.kernel.errors import InvalidArgument
from groundplane.orbit.geometry import (
    SECONDS_PER_DAY,
    FloatArray,
    IntArray,
    SatelliteBatch,
    SiteFrames,
    as_site_frames,
    earth_rotation,
    error_reason,
    offset_jd_fr,
    propagate,
    teme_to_itrf,
    utc_datetimes,
    utc_jd_fr,
)
from groundplane.orbit.sites import Site

BoolArray = NDArray[np.bool_]
_DEG = 180.0 / math.pi
#: Coarse steps available to satellite groups, seconds.
_STEPS_S = (10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 450.0, 600.0)
#: Step = this angle (rad) of the satellite's fastest orbital motion (the default of
#: :func:`coarse_step_s`, which the visibility screen uses as is).
_STEP_ANGLE_RAD = 0.13
#: The pass search's step angle: twice the default (LEO: 180 s instead of 90 s), which halves
#: SGP4 and the grid scan. Its larger interpolation error (tens of metres) is removed by the
#: final Newton step on the exact SGP4 state (:func:`_polish_edges`); 0.39 rad misses passes.
_PASS_STEP_ANGLE_RAD = 0.26


def coarse_step_s(batch: SatelliteBatch, step_angle_rad: float = _STEP_ANGLE_RAD) -> FloatArray:
    """Coarse search step of each satellite, seconds (one of a few fixed values)."""
    n = batch.mean_motion_rad_s
    e = np.clip(batch.eccentricity, 0.0, 0.99)
    fastest = n * (1.0 + e) ** 2 / (1.0 - e * e) ** 1.5
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(fastest > 0, step_angle_rad / fastest, _STEPS_S[-1])
    steps = np.array(_STEPS_S)
    index = np.clip(np.searchsorted(steps, raw, side="right") - 1, 0, steps.size - 1)
    return np.asarray(steps[index], dtype=np.float64)


@dataclass(frozen=True)
class Pass:
    """One pass of a satellite over a site (times UTC; clipped ends are the window's edges)."""

    catalog_id: str
    site_id: str
    aos: datetime
    tca: datetime
    los: datetime
    max_elevation_deg: float
    aos_azimuth_deg: float
    los_azimuth_deg: float
    aos_clipped: bool
    los_clipped: bool

    @property
    def duration_s(self) -> float:
        return (self.los - self.aos).total_seconds()


@dataclass(frozen=True)
class PassTable:
    """Passes as arrays (``P`` rows), sorted by satellite, site, AOS.

    Times are seconds after the window start (``start_jd + start_fr``, UTC). ``sat_index`` and
    ``site_index`` index ``satellite_ids`` and ``site_ids``. ``errors`` maps catalog ids of
    satellites that hit an SGP4 error inside the window to ``(code, reason)``; their passes stop
    at the last valid instant (that end is flagged clipped).
    """

    satellite_ids: tuple[str, ...]
    site_ids: tuple[str, ...]
    start_jd: float
    start_fr: float
    sat_index: IntArray
    site_index: IntArray
    aos_s: FloatArray
    tca_s: FloatArray
    los_s: FloatArray
    max_elevation_deg: FloatArray
    aos_azimuth_deg: FloatArray
    los_azimuth_deg: FloatArray
    aos_clipped: BoolArray
    los_clipped: BoolArray
    errors: dict[str, tuple[int, str]]

    def __len__(self) -> int:
        return int(self.aos_s.size)

    @property
    def duration_s(self) -> FloatArray:
        return self.los_s - self.aos_s

    def datetimes(self, seconds: FloatArray) -> list[datetime]:
        jd, fr = offset_jd_fr(self.start_jd, self.start_fr, seconds)
        return utc_datetimes(jd, fr)

    def passes(self) -> list[Pass]:
        """The rows as :class:`Pass` objects."""
        aos = self.datetimes(self.aos_s)
        tca = self.datetimes(self.tca_s)
        los = self.datetimes(self.los_s)
        return [
            Pass(
                catalog_id=self.satellite_ids[s],
                site_id=self.site_ids[k],
                aos=a,
                tca=t,
                los=lo,
                max_elevation_deg=me,
                aos_azimuth_deg=aa,
                los_azimuth_deg=la,
                aos_clipped=ac,
                los_clipped=lc,
            )
            for s, k, a, t, lo, me, aa, la, ac, lc in zip(
                self.sat_index.tolist(),
                self.site_index.tolist(),
                aos,
                tca,
                los,
                self.max_elevation_deg.tolist(),
                self.aos_azimuth_deg.tolist(),
                self.los_azimuth_deg.tolist(),
                self.aos_clipped.tolist(),
                self.los_clipped.tolist(),
                strict=True,
            )
        ]


# --------------------------------------------------------------------------------------------
# Geometry on arrays of (satellite state, site) pairs


@dataclass
class _Topo:
    f: FloatArray  # elevation − threshold, deg
    df: FloatArray  # d f / dt, deg/s
    el: FloatArray  # deg
    del_: FloatArray  # d el / dt, deg/s
    az: FloatArray  # deg in [0, 360)


def _topo(
    frames: SiteFrames,
    site: IntArray | int,
    p: tuple[FloatArray, FloatArray, FloatArray],
    v: tuple[FloatArray, FloatArray, FloatArray],
    need_az: bool = True,
) -> _Topo:
    """Elevation, azimuth, their rates and ``f``, ``f'`` for ITRF states seen from sites.

    With ``need_az=False`` and sites without a mask, ``az`` is left empty (saves an arctan2).
    """
    s = frames.ecef_km[site]
    enu = frames.enu[site]
    dx, dy, dz = p[0] - s[..., 0], p[1] - s[..., 1], p[2] - s[..., 2]
    east, north, up = enu[..., 0, :], enu[..., 1, :], enu[..., 2, :]
    e = east[..., 0] * dx + east[..., 1] * dy
    n = north[..., 0] * dx + north[..., 1] * dy + north[..., 2] * dz
    u = up[..., 0] * dx + up[..., 1] * dy + up[..., 2] * dz
    ed = east[..., 0] * v[0] + east[..., 1] * v[1]
    nd = north[..., 0] * v[0] + north[..., 1] * v[1] + north[..., 2] * v[2]
    ud = up[..., 0] * v[0] + up[..., 1] * v[1] + up[..., 2] * v[2]
    h2 = e * e + n * n
    hor = np.sqrt(h2)
    rho2 = h2 + u * u
    el = np.arctan2(u, hor) * _DEG
    with np.errstate(divide="ignore", invalid="ignore"):
        del_ = (ud * h2 - u * (e * ed + n * nd)) / (rho2 * hor) * _DEG
        masked = bool(frames.has_mask[site].any())
        if need_az or masked:
            az = np.arctan2(e, n) * _DEG
            az += 360.0 * (az < 0.0)
        else:
            az = np.empty(0)
        if not masked:
            thr = frames.flat_threshold_deg[site]
            return _Topo(el - thr, del_, el, del_, az)
        azd = (ed * n - e * nd) / h2 * _DEG
        thr_m, slope = frames.threshold_and_slope(site, az)
        return _Topo(el - thr_m, del_ - slope * azd, el, del_, az)


def _mask_kinks_deg(site: Site) -> FloatArray:
    """Azimuths (sorted, [0, 360)) where the site's threshold ``max(min el, mask)`` has a kink.

    Between two kinks the threshold is linear in azimuth, so ``f`` is smooth there; at a kink it
    is only continuous (its local minima — a mask notch's peak — and maxima sit at kinks).
    """
    points = site.mask.points
    if len(points) < 2:  # one point is a constant mask
        return np.zeros(0)
    floor = site.min_elevation_deg
    kinks = [az for az, el in points if el >= floor]
    for (a0, e0), (a1, e1) in zip(points, (*points[1:], points[0]), strict=True):
        if (e0 - floor) * (e1 - floor) < 0:
            span = (a1 - a0) % 360.0
            kinks.append((a0 + span * (floor - e0) / (e1 - e0)) % 360.0)
    return np.unique(np.asarray(kinks, dtype=np.float64))


@dataclass
class _Group:
    """One group's propagated grid (TEME) and the data to interpolate it."""

    sat: IntArray  # global satellite indices, (G,)
    step_s: float
    r: FloatArray  # (G, M+1, 3) TEME km
    v: FloatArray  # (G, M+1, 3) TEME km/s
    ok: BoolArray  # (G, M+1)
    jd0: float
    fr0: float

    def segments(self, local: IntArray, interval: IntArray) -> _Segments:
        """Interpolators of the grid intervals ``interval`` of members ``local``."""
        return _Segments(
            self.r[local, interval],
            self.v[local, interval],
            self.r[local, interval + 1],
            self.v[local, interval + 1],
            interval * self.step_s,
            self.step_s,
            self.jd0,
            self.fr0,
        )


@dataclass
class _Segments:
    """Cubic-Hermite interpolation of TEME states over a set of grid intervals (one per row).

    ``step_s`` is the grid step of each row (one value for all rows, or one per row); ``site``
    (optional) is the site each row is seen from, for :meth:`topo`.
    """

    r0: FloatArray
    v0: FloatArray
    r1: FloatArray
    v1: FloatArray
    t0: FloatArray
    step_s: FloatArray | float
    jd0: float
    fr0: float
    site: IntArray | None = None

    def take(self, rows: IntArray) -> _Segments:
        """The rows ``rows`` only."""
        step = self.step_s if isinstance(self.step_s, float) else self.step_s[rows]
        return _Segments(
            self.r0[rows],
            self.v0[rows],
            self.r1[rows],
            self.v1[rows],
            self.t0[rows],
            step,
            self.jd0,
            self.fr0,
            None if self.site is None else self.site[rows],
        )

    def itrf_at(
        self, t: FloatArray
    ) -> tuple[
        tuple[FloatArray, FloatArray, FloatArray], tuple[FloatArray, FloatArray, FloatArray]
    ]:
        """Interpolated ITRF position (km) and velocity (km/s) of each row at its time ``t``."""
        h = self.step_s
        s = (t - self.t0) / h
        s2 = s * s
        s3 = s2 * s
        h01 = 3 * s2 - 2 * s3
        h00 = 1 - h01
        h10 = (s3 - 2 * s2 + s) * h
        h11 = (s3 - s2) * h
        g01 = (6 * s - 6 * s2) / h
        g10 = 3 * s2 - 4 * s + 1
        g11 = 3 * s2 - 2 * s
        r0, v0, r1, v1 = self.r0, self.v0, self.r1, self.v1
        comps = []
        rates = []
        for j in range(3):
            comps.append(h00 * r0[:, j] + h10 * v0[:, j] + h01 * r1[:, j] + h11 * v1[:, j])
            rates.append(g01 * (r1[:, j] - r0[:, j]) + g10 * v0[:, j] + g11 * v1[:, j])
        rotation = earth_rotation(self.jd0, self.fr0 + t / SECONDS_PER_DAY)
        r, v = teme_to_itrf(comps, rates, rotation)
        return (r[0], r[1], r[2]), (v[0], v[1], v[2])

    def topo(self, frames: SiteFrames, t: FloatArray) -> _Topo:
        """:func:`_topo` of each row's interpolated state at its time ``t`` from its site."""
        assert self.site is not None, "segments built without their sites"
        p, v = self.itrf_at(t)
        return _topo(frames, self.site, p, v)


def _newton(  # noqa: PLR0913, PLR0917 - a numeric kernel: function, bracket, values, guess, iterations
    func: Callable[[FloatArray], tuple[FloatArray, FloatArray]],
    a: FloatArray,
    b: FloatArray,
    fa: FloatArray,
    guess: FloatArray,
    iterations: int = 3,
) -> FloatArray:
    """Root of ``func`` (returning value and derivative) in brackets ``[a, b]``, vectorised.

    Newton steps from ``guess``, kept inside the bracket (which shrinks with every evaluation;
    a step leaving it is replaced by the bracket's midpoint). A fixed number of steps and no
    convergence test: use :func:`_bracketed_root` where the result must be converged.
    """
    a, b = a.copy(), b.copy()
    neg_a = fa <= 0
    x = np.clip(guess, a, b)
    for _ in range(iterations):
        fx, dfx = func(x)
        same_as_a = (fx <= 0) == neg_a
        a = np.where(same_as_a, x, a)
        b = np.where(same_as_a, b, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = x - fx / dfx
        x = np.where((step >= a) & (step <= b), step, 0.5 * (a + b))
    return x


#: Convergence of refined AOS/LOS times on the interpolated state, seconds (the step after
#: which a row stops; Newton converges quadratically, so the error left is far smaller, and the
#: exact-SGP4 Newton step of :func:`_polish_edges` follows).
_TOL_S = 2e-2
#: Convergence of extrema (TCA, hidden maxima), seconds: the elevation error is quadratic in the
#: time error there (≲ 1e-4° at this tolerance, even for a pass through the zenith).
_EXTREMUM_TOL_S = 1e-1
#: Iterations after which a root search stops trusting Newton / false-position steps and
#: bisects (guarantees convergence: 60 s steps halve to ``_TOL_S`` in ~20 more).
_FAST_ITERATIONS = 10
_MAX_ITERATIONS = 64


def _bracketed_root(  # noqa: PLR0913, PLR0917 - a numeric kernel: function, bracket, values, guess
    func: Callable[[IntArray, FloatArray], tuple[FloatArray, FloatArray | None]],
    a: FloatArray,
    b: FloatArray,
    fa: FloatArray,
    fb: FloatArray,
    guess: FloatArray,
    tol_s: float = _TOL_S,
) -> FloatArray:
    """Converged root of ``func`` in brackets ``[a, b]`` (``fa``, ``fb`` of opposite signs).

    ``func(rows, t)`` evaluates rows ``rows`` at times ``t`` and returns the value and its time
    derivative (Newton steps) or ``None`` (Illinois false-position steps). Every evaluation
    shrinks the bracket; a step outside it, or any step after ``_FAST_ITERATIONS``, bisects.
    Rows stop when their step is below ``tol_s`` (only unconverged rows are evaluated again).

    The bracket matters: the function need not be monotone in it (an interval holding a
    culmination and a set), where Newton from the wrong side of the peak steps out of the bracket;
    a fixed small number of iterations then leaves a bisection midpoint seconds from the root.
    """
    a, b = a.astype(np.float64), b.astype(np.float64)
    fa, fb = fa.astype(np.float64), fb.astype(np.float64)
    neg_a = fa <= 0
    x = np.clip(guess, a, b)
    x = np.where(np.isfinite(x), x, 0.5 * (a + b))
    side = np.zeros(a.size, dtype=np.int8)  # Illinois: which end was kept last
    active = np.arange(a.size)
    for iteration in range(_MAX_ITERATIONS):
        if active.size == 0:
            break
        xa = x[active]
        fx, dfx = func(active, xa)
        aa, bb, fa_a, fb_a = a[active], b[active], fa[active], fb[active]
        keep_b = (fx <= 0) == neg_a[active]  # x replaces a
        aa = np.where(keep_b, xa, aa)
        bb = np.where(keep_b, bb, xa)
        last = side[active]
        fa_a = np.where(keep_b, fx, np.where(last == -1, 0.5 * fa_a, fa_a))
        fb_a = np.where(keep_b, np.where(last == 1, 0.5 * fb_a, fb_a), fx)
        side[active] = np.where(keep_b, 1, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Newton where the derivative is given, else false position on the bracket.
            step = xa - fx / dfx if dfx is not None else bb - fb_a * (bb - aa) / (fb_a - fa_a)
        fast = (step > aa) & (step < bb) & (iteration < _FAST_ITERATIONS)
        new = np.where(fast, step, 0.5 * (aa + bb))
        done = (np.abs(new - xa) <= tol_s) | (fx == 0) | (bb - aa <= tol_s)
        a[active], b[active], fa[active], fb[active], x[active] = aa, bb, fa_a, fb_a, new
        active = active[~done]
    return x


def _cubic_guess(f0: FloatArray, f1: FloatArray, d0: FloatArray, d1: FloatArray) -> FloatArray:
    """Root in [0, 1] of the cubic Hermite through (f0, d0), (f1, d1) (d scaled by the step)."""
    s = np.clip(f0 / np.where(f0 != f1, f0 - f1, 1.0), 0.0, 1.0)
    for _ in range(4):
        s2 = s * s
        s3 = s2 * s
        val = (2 * s3 - 3 * s2 + 1) * f0 + (s3 - 2 * s2 + s) * d0 + (-2 * s3 + 3 * s2) * f1
        val += (s3 - s2) * d1
        der = (6 * s2 - 6 * s) * (f0 - f1) + (3 * s2 - 4 * s + 1) * d0 + (3 * s2 - 2 * s) * d1
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.clip(s - val / der, 0.0, 1.0)
        s = np.where(np.isfinite(s), s, 0.5)
    return s


def _max_guess(f0: FloatArray, f1: FloatArray, d0: FloatArray, d1: FloatArray) -> FloatArray:
    """Abscissa in [0, 1] where the cubic Hermite's derivative (quadratic) has its + → − root."""
    # p'(s) = a s² + b s + c
    qa = 6 * (f0 - f1) + 3 * d0 + 3 * d1
    qb = -6 * (f0 - f1) - 4 * d0 - 2 * d1
    qc = d0
    disc = np.maximum(qb * qb - 4 * qa * qc, 0.0)
    # The + → − root is (−b − √disc) / 2a whatever the sign of a: for a > 0 the smaller root
    # (p' < 0 between the roots), for a < 0 the larger (p' > 0 between them).
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.where(
            np.abs(qa) > 1e-12 * (np.abs(qb) + np.abs(qc)),
            (-qb - np.sqrt(disc)) / (2 * qa),
            -qc / qb,
        )
    root = np.where(np.isfinite(root), root, 0.5)
    return np.clip(root, 0.0, 1.0)


def _cubic_at(
    f0: FloatArray, f1: FloatArray, d0: FloatArray, d1: FloatArray, s: FloatArray
) -> FloatArray:
    """Value at ``s`` ∈ [0, 1] of the cubic Hermite through (f0, d0), (f1, d1) (d scaled)."""
    s2 = s * s
    s3 = s2 * s
    return (
        (2 * s3 - 3 * s2 + 1) * f0
        + (s3 - 2 * s2 + s) * d0
        + (-2 * s3 + 3 * s2) * f1
        + (s3 - s2) * d1
    )


# --------------------------------------------------------------------------------------------
# Search


@dataclass
class _Events:
    sat: list[IntArray]
    site: list[IntArray]
    t: list[FloatArray]
    kind: list[NDArray[np.int8]]  # +1 AOS, −1 LOS
    order: list[FloatArray]  # sort key inside one pair (a time inside the event's piece)
    clipped: list[BoolArray]
    az: list[FloatArray]
    el: list[FloatArray]

    def add(  # noqa: PLR0913, PLR0917 - appends one column per event field, hot path
        self,
        sat: IntArray,
        site: IntArray,
        t: FloatArray,
        kind: int | NDArray[np.int8],
        order: FloatArray,
        clipped: BoolArray | bool,
        az: FloatArray,
        el: FloatArray,
    ) -> None:
        if t.size == 0:
            return
        self.sat.append(sat)
        self.site.append(site)
        self.t.append(t)
        self.kind.append(np.broadcast_to(np.asarray(kind, dtype=np.int8), t.shape).copy())
        self.order.append(order)
        self.clipped.append(np.broadcast_to(np.asarray(clipped, dtype=bool), t.shape).copy())
        self.az.append(az)
        self.el.append(el)


#: A polishing Newton step on the exact SGP4 state larger than this (s) is not taken (the
#: interpolated root is within ~0.1 s; a larger step means f' ≈ 0, a pass grazing the threshold).
_POLISH_MAX_STEP_S = 2.0


def _exact_topo(  # noqa: PLR0913, PLR0917 - the satellites, sites, window start and the rows
    batch: SatelliteBatch,
    frames: SiteFrames,
    jd0: float,
    fr0: float,
    sat: IntArray,
    site: IntArray,
    t: FloatArray,
) -> tuple[_Topo, IntArray]:
    """:func:`_topo` of satellite ``sat[i]`` from site ``site[i]`` at ``t[i]`` on the exact SGP4
    state (one ``Satrec.sgp4_array`` call per satellite), and the SGP4 error code of each row."""
    order = np.argsort(sat, kind="stable")
    sat_o = sat[order]
    jd, fr = offset_jd_fr(jd0, fr0, t[order])
    r = np.empty((t.size, 3))
    v = np.empty((t.size, 3))
    err = np.empty(t.size, dtype=np.int64)
    cuts = np.flatnonzero(np.diff(sat_o)) + 1
    for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, t.size].tolist(), strict=True):
        e, rr, vv = batch.satrecs[int(sat_o[lo])].sgp4_array(jd[lo:hi], fr[lo:hi])
        err[lo:hi], r[lo:hi], v[lo:hi] = e, rr, vv
    r_itrf, v_itrf = teme_to_itrf(r.T, v.T, earth_rotation(jd, fr))
    back = np.empty_like(order)
    back[order] = np.arange(order.size)
    p = (r_itrf[0][back], r_itrf[1][back], r_itrf[2][back])
    vel = (v_itrf[0][back], v_itrf[1][back], v_itrf[2][back])
    return _topo(frames, site, p, vel), err[back]


def _polish_edges(  # noqa: PLR0913, PLR0917 - the events, the satellites and the sites' frames
    events: _Events,
    first: int,
    batch: SatelliteBatch,
    frames: SiteFrames,
    jd0: float,
    fr0: float,
) -> None:
    """One Newton step of the refined AOS/LOS (event arrays from ``first`` on) on the exact
    SGP4 state instead of the interpolated one: removes the interpolation error (tens of metres
    at the coarse steps, up to ~0.1 s at a slow crossing), so the edges are SGP4's own roots.

    One ``Satrec.sgp4_array`` call per satellite with edges (all its edge times at once).
    """
    if len(events.t) <= first:
        return
    sizes = [t.size for t in events.t[first:]]
    sat = np.concatenate(events.sat[first:])
    site = np.concatenate(events.site[first:])
    t = np.concatenate(events.t[first:])
    exact, err = _exact_topo(batch, frames, jd0, fr0, sat, site, t)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = exact.f / exact.df
    take = (err == 0) & np.isfinite(step) & (np.abs(step) < _POLISH_MAX_STEP_S)
    polished = t.copy()
    polished[take] -= step[take]
    az, el = np.where(take, exact.az, np.nan), np.where(take, exact.el, np.nan)
    pos = 0
    for index, size in enumerate(sizes, start=first):
        part = slice(pos, pos + size)
        events.t[index] = polished[part]
        events.az[index] = np.where(np.isfinite(az[part]), az[part], events.az[index])
        events.el[index] = np.where(np.isfinite(el[part]), el[part], events.el[index])
        pos += size


#: Fields of one piece: a time interval ``[a, b]`` inside one grid interval of one satellite
#: seen from one site, with ``f``, ``f'``, elevation and its rate at both ends.
_PIECE_FIELDS = ("a", "b", "fa", "fb", "da", "db", "ea", "eb", "ra", "rb")


@dataclass
class _Pieces:
    """Pieces of the search (see ``_PIECE_FIELDS``), accumulated over groups and sites.

    A piece is a grid interval, or the part of one between two mask kinks (inside a piece
    ``f`` is smooth, so its sign changes and extrema follow from the end values and slopes).
    """

    sat: list[IntArray]
    site: list[IntArray]
    r0: list[FloatArray]
    v0: list[FloatArray]
    r1: list[FloatArray]
    v1: list[FloatArray]
    t0: list[FloatArray]
    step: list[FloatArray]
    values: dict[str, list[FloatArray]]

    @classmethod
    def empty(cls) -> _Pieces:
        return cls([], [], [], [], [], [], [], [], {name: [] for name in _PIECE_FIELDS})

    def add(
        self,
        group: _Group,
        member: IntArray,
        interval: IntArray,
        site: IntArray,
        **values: FloatArray,
    ) -> None:
        if member.size == 0:
            return
        self.sat.append(group.sat[member])
        self.site.append(site)
        self.r0.append(group.r[member, interval])
        self.v0.append(group.v[member, interval])
        self.r1.append(group.r[member, interval + 1])
        self.v1.append(group.v[member, interval + 1])
        self.t0.append(interval * group.step_s)
        self.step.append(np.full(member.size, group.step_s))
        for name in _PIECE_FIELDS:
            self.values[name].append(values[name])


def _scan_group(  # noqa: PLR0913, PLR0915, PLR0917 - one group's grid against every site (masked sites here, with their kinks)
    group: _Group,
    frames: SiteFrames,
    kinks: Sequence[FloatArray],
    duration_s: float,
    events: _Events,
    pieces: _Pieces,
) -> None:
    """Grid pass of one group: window-edge events, and the pieces that hold an event or a peak.

    Unmasked sites go through :func:`_scan_flat_sites` together; each masked site is scanned here
    with its azimuth (for the threshold and the kinks).
    """
    h = group.step_s
    n_grid = group.r.shape[1]
    t_grid = np.arange(n_grid) * h
    t_grid[-1] = duration_s
    rotation = earth_rotation(np.full(n_grid, group.jd0), group.fr0 + t_grid / SECONDS_PER_DAY)
    r_itrf, v_itrf = teme_to_itrf(
        np.moveaxis(group.r, -1, 0), np.moveaxis(group.v, -1, 0), rotation
    )
    p = (r_itrf[0], r_itrf[1], r_itrf[2])
    v = (v_itrf[0], v_itrf[1], v_itrf[2])
    last = n_grid - 1
    ok = group.ok
    both_ok = ok[:, :-1] & ok[:, 1:]
    all_ok = bool(both_ok.all())
    flat = np.flatnonzero(~frames.has_mask)
    if flat.size:
        _scan_flat_sites(group, frames, flat, r_itrf, v_itrf, t_grid, events, pieces)
    for k in np.flatnonzero(frames.has_mask).tolist():
        topo = _topo(frames, k, p, v, need_az=False)
        up = np.where(ok, topo.f, -np.inf) > 0

        # Window edges: a pass in progress is clipped to the window.
        for column, kind, order in ((0, 1, -1.0), (last, -1, duration_s + 1.0)):
            member = np.flatnonzero(up[:, column])
            if member.size:
                col = np.full(member.size, column)
                edge = _topo(frames, k, _at(p, member, col), _at(v, member, col))
                events.add(
                    group.sat[member],
                    np.full(member.size, k),
                    np.full(member.size, t_grid[column]),
                    kind,
                    np.full(member.size, order),
                    True,
                    edge.az,
                    edge.el,
                )
        if last == 0:
            continue
        up0, up1 = up[:, :-1], up[:, 1:]
        change = up0 != up1
        # Sign changes next to an SGP4 error: the event sits at the valid end, clipped.
        if not all_ok:
            member, interval = np.nonzero(change & ~both_ok)
            rising = up1[member, interval]
            col = np.where(rising, interval + 1, interval)
            edge = _topo(frames, k, _at(p, member, col), _at(v, member, col))
            events.add(
                group.sat[member],
                np.full(member.size, k),
                t_grid[col],
                np.where(rising, 1, -1).astype(np.int8),
                t_grid[interval] + 0.5 * h,
                True,
                edge.az,
                edge.el,
            )
        rising = topo.df > 0
        el_up = topo.del_ > 0
        interesting = change
        # Hidden maxima (both ends below, f' from + to −), hidden dips (the reverse), and
        # elevation maxima next to a visible sample (TCA candidates).
        interesting |= rising[:, :-1] & ~rising[:, 1:] & ~(up0 | up1)
        interesting |= ~rising[:, :-1] & rising[:, 1:] & up0 & up1
        interesting |= (up0 | up1) & el_up[:, :-1] & ~el_up[:, 1:]
        if not all_ok:
            interesting &= both_ok
        split = np.zeros(0, dtype=bool)
        if kinks[k].size:
            split = _kink_intervals(frames, k, kinks[k], topo, t_grid, both_ok)
            interesting &= ~split
        member, interval = np.nonzero(interesting)
        if member.size:
            site_k = np.full(member.size, k)
            pieces.add(
                group,
                member,
                interval,
                site_k,
                a=t_grid[interval],
                b=t_grid[interval + 1],
                fa=topo.f[member, interval],
                fb=topo.f[member, interval + 1],
                da=topo.df[member, interval],
                db=topo.df[member, interval + 1],
                ea=topo.el[member, interval],
                eb=topo.el[member, interval + 1],
                ra=topo.del_[member, interval],
                rb=topo.del_[member, interval + 1],
            )
        if split.size and split.any():
            _split_at_kinks(group, frames, k, kinks[k], split, t_grid, topo, pieces)


#: Margin on a satellite's largest sampled ITRF speed when bounding its motion between samples.
_SPEED_MARGIN = 1.2
#: Satellite × time × site elements per chunk of the grid scan (bounded scratch memory).
_SCAN_CHUNK = 1 << 17


def _scan_flat_sites(  # noqa: PLR0913, PLR0915, PLR0917 - one vectorised grid scan (chunks, edges, pieces)
    group: _Group,
    frames: SiteFrames,
    flat: IntArray,
    r_itrf: FloatArray,
    v_itrf: FloatArray,
    t_grid: FloatArray,
    events: _Events,
    pieces: _Pieces,
) -> None:
    """:func:`_scan_group` for sites whose threshold does not depend on azimuth, all at once.

    On the grid only signs are needed: ``f > 0`` is ``u > tan(threshold)·√(e² + n²)`` and the
    sign of ``f'`` (= the elevation rate) is that of ``u̇ (e² + n²) − u (e ė + n ṅ)``; the east,
    north and up components of every site come from one matrix product per chunk of satellites.
    Elevations, rates and azimuths (arctangents, divisions) are computed only at the ends of the
    pieces kept.
    """
    n_sat, n_grid = group.ok.shape
    n_site = flat.size
    east, north, zen = (frames.enu[flat, i, :] for i in range(3))  # (K, 3) each
    site_km = frames.ecef_km[flat]
    off_e, off_n, off_u = (np.einsum("kj,kj->k", axis, site_km) for axis in (east, north, zen))
    tan_thr = np.tan(np.radians(frames.flat_threshold_deg[flat]))
    unprunable = frames.flat_threshold_deg[flat] < 0.0  # below the horizon plane: no pruning
    positions = np.moveaxis(r_itrf, 0, -1)  # (G, M, 3) views for gathers
    velocities = np.moveaxis(v_itrf, 0, -1)
    chunk = max(1, _SCAN_CHUNK // (n_grid * n_site))
    last = n_grid - 1

    def project(
        c: tuple[FloatArray, FloatArray, FloatArray], axis: FloatArray, offset: FloatArray | None
    ) -> FloatArray:
        out = c[0][..., None] * axis[:, 0]
        out += c[1][..., None] * axis[:, 1]
        out += c[2][..., None] * axis[:, 2]
        if offset is not None:
            out -= offset
        return out

    for g0 in range(0, n_sat, chunk):
        g1 = min(n_sat, g0 + chunk)
        pc = (r_itrf[0][g0:g1], r_itrf[1][g0:g1], r_itrf[2][g0:g1])
        vc = (v_itrf[0][g0:g1], v_itrf[1][g0:g1], v_itrf[2][g0:g1])
        u = project(pc, zen, off_u)
        # Footprint pruning: |du/dt| <= |v|, so in an interval u stays below
        # (u0 + u1 + |v|max h) / 2; where that is negative and the threshold is >= 0 nothing in
        # the interval is visible (or near a culmination worth refining).
        speed2 = vc[0] * vc[0] + vc[1] * vc[1] + vc[2] * vc[2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: decayed satellites
            reach = np.sqrt(np.nanmax(speed2, axis=1)) * (_SPEED_MARGIN * group.step_s)
        reach = np.where(np.isfinite(reach), reach, np.inf)[:, None, None]
        near = u[:, :-1] + u[:, 1:]
        near += reach
        near_b = near > 0
        near_b |= unprunable
        okc = group.ok[g0:g1]
        if not okc.all():
            near_b |= (okc[:, :-1] != okc[:, 1:])[:, :, None]
        point = np.zeros(u.shape, dtype=bool)
        point[:, :-1] = near_b
        point[:, 1:] |= near_b
        # Flat indices into the (satellite, time, site) chunk and the (satellite, time) rows:
        # one index array per gather instead of three.
        where = np.flatnonzero(point)
        row, kk = np.divmod(where, n_site)
        pk = tuple(c.reshape(-1)[row] for c in pc)
        vk = tuple(c.reshape(-1)[row] for c in vc)
        ek, nk = east[kk], north[kk]
        e = pk[0] * ek[:, 0] + pk[1] * ek[:, 1] - off_e[kk]
        n = pk[0] * nk[:, 0] + pk[1] * nk[:, 1] + pk[2] * nk[:, 2] - off_n[kk]
        ed = vk[0] * ek[:, 0] + vk[1] * ek[:, 1]
        nd = vk[0] * nk[:, 0] + vk[1] * nk[:, 1] + vk[2] * nk[:, 2]
        zk = zen[kk]
        ud = vk[0] * zk[:, 0] + vk[1] * zk[:, 1] + vk[2] * zk[:, 2]
        uk = u.reshape(-1)[where]
        h2 = e * e + n * n
        up = np.zeros(u.shape, dtype=bool)
        up.reshape(-1)[where] = uk > np.sqrt(h2) * tan_thr[kk]
        rising = np.zeros(u.shape, dtype=bool)
        rising.reshape(-1)[where] = ud * h2 > uk * (e * ed + n * nd)
        ok = group.ok[g0:g1, :, None]
        up &= ok
        rising &= ok
        # Window edges: a pass in progress is clipped to the window.
        for column, kind, order in ((0, 1, -1.0), (last, -1, float(t_grid[-1]) + 1.0)):
            member, kk = np.nonzero(up[:, column, :])
            if member.size:
                col = np.full(member.size, column)
                m_g = member + g0
                edge = _topo(
                    frames,
                    flat[kk],
                    _at3(positions, m_g, col),
                    _at3(velocities, m_g, col),
                    need_az=True,
                )
                events.add(
                    group.sat[m_g],
                    flat[kk],
                    np.full(member.size, t_grid[column]),
                    kind,
                    np.full(member.size, order),
                    True,
                    edge.az,
                    edge.el,
                )
        if last == 0:
            continue
        up0, up1 = up[:, :-1], up[:, 1:]
        rising0, rising1 = rising[:, :-1], rising[:, 1:]
        change = up0 != up1
        both_ok = ok[:, :-1] & ok[:, 1:]
        # Sign changes next to an SGP4 error: the event sits at the valid end, clipped.
        member, interval, kk = np.nonzero(change & ~both_ok)
        if member.size:
            going_up = up1[member, interval, kk]
            col = np.where(going_up, interval + 1, interval)
            m_g = member + g0
            edge = _topo(
                frames,
                flat[kk],
                _at3(positions, m_g, col),
                _at3(velocities, m_g, col),
                need_az=True,
            )
            events.add(
                group.sat[m_g],
                flat[kk],
                t_grid[col],
                np.where(going_up, 1, -1).astype(np.int8),
                t_grid[interval] + 0.5 * group.step_s,
                True,
                edge.az,
                edge.el,
            )
        # Crossings; maxima of f (= of the elevation here: hidden maxima and TCA candidates);
        # dips between visible ends.
        interesting = change | (rising0 & ~rising1)
        interesting |= ~rising0 & rising1 & up0 & up1
        interesting &= both_ok
        where = np.flatnonzero(interesting)
        if where.size == 0:
            continue
        row, kk = np.divmod(where, n_site)
        member, interval = np.divmod(row, last)
        m_g, site = member + g0, flat[kk]
        at_a = member * n_grid + interval  # (satellite, time) rows of the chunk
        at_b = at_a + 1
        end_a = _topo(
            frames,
            site,
            tuple(c.reshape(-1)[at_a] for c in pc),
            tuple(c.reshape(-1)[at_a] for c in vc),
            need_az=False,
        )
        end_b = _topo(
            frames,
            site,
            tuple(c.reshape(-1)[at_b] for c in pc),
            tuple(c.reshape(-1)[at_b] for c in vc),
            need_az=False,
        )
        pieces.add(
            group,
            m_g,
            interval,
            site,
            a=t_grid[interval],
            b=t_grid[interval + 1],
            fa=end_a.f,
            fb=end_b.f,
            da=end_a.df,
            db=end_b.df,
            ea=end_a.el,
            eb=end_b.el,
            ra=end_a.del_,
            rb=end_b.del_,
        )


def _at3(
    states: FloatArray, member: IntArray, column: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Components of ``states[member, column]`` (``states`` is ``(G, M, 3)``)."""
    picked = states[member, column]
    return picked[:, 0], picked[:, 1], picked[:, 2]


def _at(
    comps: tuple[FloatArray, FloatArray, FloatArray], member: IntArray, column: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    return comps[0][member, column], comps[1][member, column], comps[2][member, column]


#: Elevation margin (deg) around a mask's band within which its kinks are looked for.
_KINK_MARGIN_DEG = 1.0


def _kink_intervals(  # noqa: PLR0913, PLR0917 - the site's grid and its kinks
    frames: SiteFrames,
    k: int,
    kinks: FloatArray,
    topo: _Topo,
    t_grid: FloatArray,
    both_ok: BoolArray,
) -> BoolArray:
    """Grid intervals whose azimuth sweeps over a kink of the mask while the mask matters.

    The mask matters where the elevation (plus what it can gain between samples) reaches the
    lowest threshold and does not clear the highest one.
    """
    site = frames.sites[k]
    lowest = float(frames.min_threshold_deg[k])
    highest = max(site.min_elevation_deg, *(e for _, e in site.mask.points))
    el0, el1 = topo.el[:, :-1], topo.el[:, 1:]
    w = np.diff(t_grid)
    slack = 0.5 * w * np.maximum(np.abs(topo.del_[:, :-1]), np.abs(topo.del_[:, 1:]))
    slack += _KINK_MARGIN_DEG
    near: BoolArray = np.maximum(el0, el1) + slack >= lowest
    near &= np.minimum(el0, el1) - slack <= highest
    near &= both_ok
    if not near.any():
        return near
    member, interval = np.nonzero(near)
    az0 = topo.az[member, interval]
    sweep = (topo.az[member, interval + 1] - az0 + 180.0) % 360.0 - 180.0
    crosses = _kink_count(kinks, az0, sweep) > 0
    out: BoolArray = np.zeros(near.shape, dtype=bool)
    out[member[crosses], interval[crosses]] = True
    return out


def _kink_count(kinks: FloatArray, az0: FloatArray, sweep: FloatArray) -> IntArray:
    """How many kinks lie strictly inside each azimuth arc from ``az0`` over ``sweep`` deg."""
    lo = np.minimum(az0, az0 + sweep)
    hi = np.maximum(az0, az0 + sweep)
    ext = np.concatenate((kinks - 360.0, kinks, kinks + 360.0))
    return np.searchsorted(ext, hi, side="left") - np.searchsorted(ext, lo, side="right")


#: One-sided slopes at a kink are taken this far (s) from it.
_KINK_EPS_S = 1e-3


def _split_at_kinks(  # noqa: PLR0913, PLR0917 - the site's grid, its kinks and the output
    group: _Group,
    frames: SiteFrames,
    k: int,
    kinks: FloatArray,
    split: BoolArray,
    t_grid: FloatArray,
    topo: _Topo,
    pieces: _Pieces,
) -> None:
    """Pieces of the intervals ``split``, cut at the times their azimuth crosses a kink."""
    member, interval = np.nonzero(split)
    az0 = topo.az[member, interval]
    sweep = (topo.az[member, interval + 1] - az0 + 180.0) % 360.0 - 180.0
    count = _kink_count(kinks, az0, sweep)
    # One row per (interval, kink crossed), kinks in arc order from az0.
    parent = np.repeat(np.arange(member.size), count)
    first = np.cumsum(count) - count
    rank = np.arange(parent.size) - first[parent]
    ext = np.concatenate((kinks - 360.0, kinks, kinks + 360.0))
    lo = np.minimum(az0, az0 + sweep)
    start_idx = np.searchsorted(ext, lo, side="right")
    kink_az = ext[start_idx[parent] + rank]
    sign = np.sign(sweep[parent])
    m_r, i_r = member[parent], interval[parent]
    seg = group.segments(m_r, i_r)
    seg.site = np.full(m_r.size, k)
    a, b = t_grid[i_r], t_grid[i_r + 1]

    def az_offset(rows: IntArray, t: FloatArray) -> tuple[FloatArray, None]:
        out = seg.take(rows).topo(frames, t)
        return sign[rows] * ((out.az - kink_az[rows] + 180.0) % 360.0 - 180.0), None

    ga = sign * ((az0[parent] - kink_az + 180.0) % 360.0 - 180.0)
    gb = sign * ((topo.az[m_r, i_r + 1] - kink_az + 180.0) % 360.0 - 180.0)
    t_kink = _bracketed_root(az_offset, a, b, ga, gb, a + (b - a) * (ga / (ga - gb)))
    order = np.lexsort((t_kink, parent))
    parent, t_kink, m_r, i_r = parent[order], t_kink[order], m_r[order], i_r[order]
    seg = seg.take(order)
    mid = seg.topo(frames, t_kink)
    left = seg.topo(frames, t_kink - _KINK_EPS_S)
    right = seg.topo(frames, t_kink + _KINK_EPS_S)
    # Pieces: [grid a, kink 1], [kink 1, kink 2], ..., [kink n, grid b] of every interval.
    n_par = member.size
    starts = np.flatnonzero(np.r_[True, parent[1:] != parent[:-1]])
    ends = np.r_[starts[1:], parent.size] - 1
    par_m, par_i = member, interval
    # First pieces (grid start → first kink) and last pieces (last kink → grid end).
    f, df, el, rate = topo.f, topo.df, topo.el, topo.del_
    first_rows = starts
    last_rows = ends
    site_arr = np.full(n_par, k)
    pieces.add(
        group,
        par_m,
        par_i,
        site_arr,
        a=t_grid[par_i],
        b=t_kink[first_rows],
        fa=f[par_m, par_i],
        fb=mid.f[first_rows],
        da=df[par_m, par_i],
        db=left.df[first_rows],
        ea=el[par_m, par_i],
        eb=mid.el[first_rows],
        ra=topo.del_[par_m, par_i],
        rb=mid.del_[first_rows],
    )
    pieces.add(
        group,
        par_m,
        par_i,
        site_arr,
        a=t_kink[last_rows],
        b=t_grid[par_i + 1],
        fa=mid.f[last_rows],
        fb=f[par_m, par_i + 1],
        da=right.df[last_rows],
        db=df[par_m, par_i + 1],
        ea=mid.el[last_rows],
        eb=el[par_m, par_i + 1],
        ra=mid.del_[last_rows],
        rb=rate[par_m, par_i + 1],
    )
    # Between consecutive kinks of one interval.
    inner = np.flatnonzero(parent[1:] == parent[:-1])
    if inner.size:
        nxt = inner + 1
        pieces.add(
            group,
            m_r[inner],
            i_r[inner],
            np.full(inner.size, k),
            a=t_kink[inner],
            b=t_kink[nxt],
            fa=mid.f[inner],
            fb=mid.f[nxt],
            da=right.df[inner],
            db=left.df[nxt],
            ea=mid.el[inner],
            eb=mid.el[nxt],
            ra=mid.del_[inner],
            rb=mid.del_[nxt],
        )


#: A hidden extremum is refined only when the cubic through the piece's ends puts it within
#: this margin (deg) of the threshold (far beyond the cubic's error at the chosen steps).
_SCREEN_MARGIN_DEG = 2.0


class _Probe:
    """Evaluates rows of segments for :func:`_bracketed_root`, remembering each row's last
    ``f``, elevation and azimuth (at the last iterate, within the tolerance of the root: no
    extra evaluation is needed for the event's angles).

    ``value`` is what the solver zeroes: ``"f"`` (with ``f'``, Newton), ``"df"`` (an extremum
    of ``f``) or ``"el"`` (an elevation maximum, through d(sin el)/dt: the same sign as the
    elevation rate, but smooth through the zenith).
    """

    def __init__(self, seg: _Segments, frames: SiteFrames, value: str) -> None:
        self.seg, self.frames, self.value = seg, frames, value
        self.size = seg.t0.size
        self.f, self.el, self.az = np.empty(self.size), np.empty(self.size), np.empty(self.size)

    def __call__(self, rows: IntArray, t: FloatArray) -> tuple[FloatArray, FloatArray | None]:
        seg = self.seg if rows.size == self.size else self.seg.take(rows)
        out = seg.topo(self.frames, t)
        self.f[rows], self.el[rows], self.az[rows] = out.f, out.el, out.az
        if self.value == "f":
            return out.f, out.df
        if self.value == "df":
            return out.df, None
        return np.cos(np.radians(out.el)) * out.del_, None


def _refine(  # noqa: PLR0913, PLR0915, PLR0917 - one batched refinement of all pieces; outputs
    pieces: _Pieces,
    frames: SiteFrames,
    jd0: float,
    fr0: float,
    events: _Events,
    peaks: list[tuple[IntArray, IntArray, FloatArray, FloatArray]],
) -> None:
    """Every AOS, LOS and culmination of the pieces, refined together (all groups, all sites)."""
    if not pieces.sat:
        return
    sat = np.concatenate(pieces.sat)
    site = np.concatenate(pieces.site)
    segs = _Segments(
        np.concatenate(pieces.r0),
        np.concatenate(pieces.v0),
        np.concatenate(pieces.r1),
        np.concatenate(pieces.v1),
        np.concatenate(pieces.t0),
        np.concatenate(pieces.step),
        jd0,
        fr0,
        site,
    )
    val = {name: np.concatenate(parts) for name, parts in pieces.values.items()}
    a, b, fa, fb, da, db = (val[n] for n in ("a", "b", "fa", "fb", "da", "db"))
    w = b - a
    up_a, up_b = fa > 0, fb > 0

    # (a) Sign changes: one crossing each.
    rows = np.flatnonzero(up_a != up_b)
    if rows.size:
        probe = _Probe(segs.take(rows), frames, "f")
        ra, rw, rfa, rfb = a[rows], w[rows], fa[rows], fb[rows]
        guess = ra + rw * _cubic_guess(rfa, rfb, da[rows] * rw, db[rows] * rw)
        root = _bracketed_root(probe, ra, ra + rw, rfa, rfb, guess)
        kinds = np.where(rfa <= 0, 1, -1).astype(np.int8)
        events.add(sat[rows], site[rows], root, kinds, ra + 0.5 * rw, False, probe.az, probe.el)

    # (b) Hidden maxima (both ends below, f' from + to −) and hidden dips (the reverse).
    for hidden_max in (True, False):
        if hidden_max:
            cand = (da > 0) & (db < 0) & ~(up_a | up_b)
        else:
            cand = (da < 0) & (db > 0) & up_a & up_b
        rows = np.flatnonzero(cand)
        if rows.size == 0:
            continue
        sign = 1.0 if hidden_max else -1.0
        rw = w[rows]
        s_star = _max_guess(
            sign * fa[rows], sign * fb[rows], sign * da[rows] * rw, sign * db[rows] * rw
        )
        cubic = _cubic_at(fa[rows], fb[rows], da[rows] * rw, db[rows] * rw, s_star)
        near = sign * cubic > -_SCREEN_MARGIN_DEG
        rows, s_star = rows[near], s_star[near]
        if rows.size == 0:
            continue
        seg = segs.take(rows)
        ra, rb = a[rows], b[rows]
        extremum = _Probe(seg, frames, "df")
        t_ext = _bracketed_root(
            extremum, ra, rb, da[rows], db[rows], ra + (rb - ra) * s_star, _EXTREMUM_TOL_S
        )
        crossed = (extremum.f > 0) if hidden_max else (extremum.f <= 0)
        if not crossed.any():
            continue
        keep = np.flatnonzero(crossed)
        rows, seg = rows[keep], seg.take(keep)
        ra, rb, te, fe = a[rows], b[rows], t_ext[keep], extremum.f[keep]
        at_left, at_right = _Probe(seg, frames, "f"), _Probe(seg, frames, "f")
        left = _bracketed_root(at_left, ra, te, fa[rows], fe, 0.5 * (ra + te))
        right = _bracketed_root(at_right, te, rb, fe, fb[rows], 0.5 * (te + rb))
        kinds_lr = (1, -1) if hidden_max else (-1, 1)
        span = rb - ra
        for t_edge, kind, frac, probe in (
            (left, kinds_lr[0], 0.25, at_left),
            (right, kinds_lr[1], 0.75, at_right),
        ):
            events.add(
                sat[rows], site[rows], t_edge, kind, ra + frac * span, False, probe.az, probe.el
            )
        if hidden_max:
            peaks.append((sat[rows], site[rows], te, extremum.el[keep]))

    # (c) Elevation maxima next to visible ends: TCA candidates.
    ea, eb, rate_a, rate_b = val["ea"], val["eb"], val["ra"], val["rb"]
    rows = np.flatnonzero((up_a | up_b) & (rate_a > 0) & (rate_b <= 0))
    if rows.size:
        ra, rw = a[rows], w[rows]
        guess = ra + rw * _max_guess(ea[rows], eb[rows], rate_a[rows] * rw, rate_b[rows] * rw)
        peak = _Probe(segs.take(rows), frames, "el")
        t_peak = _bracketed_root(
            peak,
            ra,
            ra + rw,
            np.cos(np.radians(ea[rows])) * rate_a[rows],
            np.cos(np.radians(eb[rows])) * rate_b[rows],
            guess,
            _EXTREMUM_TOL_S,
        )
        peaks.append((sat[rows], site[rows], t_peak, peak.el))


def find_pass_table(  # noqa: PLR0913 - the window, both optional filters by keyword
    batch: SatelliteBatch,
    sites: Sequence[Site] | SiteFrames,
    start: datetime,
    stop: datetime,
    *,
    min_max_elevation_deg: float | None = None,
    min_duration_s: float | None = None,
) -> PassTable:
    """Every pass of every satellite over every site in ``[start, stop]`` (arrays).

    ``min_max_elevation_deg`` keeps passes whose culmination reaches it; ``min_duration_s`` keeps
    passes at least that long (both measured on the part inside the window).
    """
    frames = as_site_frames(sites)
    jd_arr, fr_arr = utc_jd_fr([start, stop])
    duration_s = float((jd_arr[1] - jd_arr[0]) + (fr_arr[1] - fr_arr[0])) * SECONDS_PER_DAY
    if not duration_s > 0:
        raise InvalidArgument(
            f"stop must be after start, got start={start.isoformat()} stop={stop.isoformat()}"
        )
    if duration_s > 40 * SECONDS_PER_DAY:
        raise InvalidArgument(f"window must be at most 40 days, got {duration_s / 86400:.1f} days")
    for name, value in (
        ("min_max_elevation_deg", min_max_elevation_deg),
        ("min_duration_s", min_duration_s),
    ):
        if value is not None and not math.isfinite(value):
            raise InvalidArgument(f"{name} must be a finite number, got {value!r}")
    jd0, fr0 = float(jd_arr[0]), float(fr_arr[0])
    events = _Events([], [], [], [], [], [], [], [])
    peaks: list[tuple[IntArray, IntArray, FloatArray, FloatArray]] = []
    errors: dict[str, tuple[int, str]] = {}
    pieces = _Pieces.empty()
    kinks = [_mask_kinks_deg(site) for site in frames.sites]
    if len(batch) and len(frames):
        steps = coarse_step_s(batch, _PASS_STEP_ANGLE_RAD)
        for step in np.unique(steps):
            members = np.flatnonzero(steps == step)
            n_int = max(1, math.ceil(duration_s / float(step) - 1e-9))
            h = duration_s / n_int
            offsets = np.arange(n_int + 1) * h
            offsets[-1] = duration_s
            jd, fr = offset_jd_fr(jd0, fr0, offsets)
            sub = batch if members.size == len(batch) else batch.subset(members)
            prop = propagate(sub, jd, fr)
            for local in np.flatnonzero(~prop.ok.all(axis=1)):
                codes = prop.error_code[local]
                code = int(codes[np.flatnonzero(codes)[0]])
                errors[sub.ids[int(local)]] = (code, error_reason(code))
            group = _Group(members, h, prop.r_teme_km, prop.v_teme_km_s, prop.ok, jd0, fr0)
            _scan_group(group, frames, kinks, duration_s, events, pieces)
        first_refined = len(events.t)
        _refine(pieces, frames, jd0, fr0, events, peaks)
        _polish_edges(events, first_refined, batch, frames, jd0, fr0)
    return _assemble(
        batch, frames, jd0, fr0, events, peaks, errors, min_max_elevation_deg, min_duration_s
    )


def _assemble(  # noqa: PLR0913, PLR0915, PLR0917 - joins the search's arrays into one table, filters applied
    batch: SatelliteBatch,
    frames: SiteFrames,
    jd0: float,
    fr0: float,
    events: _Events,
    peaks: list[tuple[IntArray, IntArray, FloatArray, FloatArray]],
    errors: dict[str, tuple[int, str]],
    min_max_elevation_deg: float | None,
    min_duration_s: float | None,
) -> PassTable:
    n_sites = max(len(frames), 1)
    if events.t:
        sat = np.concatenate(events.sat).astype(np.intp)
        site = np.concatenate(events.site).astype(np.intp)
        t = np.concatenate(events.t)
        kind = np.concatenate(events.kind)
        order = np.concatenate(events.order)
        clipped = np.concatenate(events.clipped)
        az = np.concatenate(events.az)
        el = np.concatenate(events.el)
    else:
        sat = site = np.zeros(0, dtype=np.intp)
        t = order = az = el = np.zeros(0)
        kind = np.zeros(0, dtype=np.int8)
        clipped = np.zeros(0, dtype=bool)
    pair = sat * n_sites + site
    idx = np.lexsort((order, pair))
    sat, site, pair = sat[idx], site[idx], pair[idx]
    t, az, el = t[idx], az[idx], el[idx]
    kind, clipped = kind[idx], clipped[idx]
    # Events alternate AOS, LOS within each pair by construction.
    aos = np.flatnonzero(kind == 1)
    los = aos + 1
    valid = los < kind.size
    aos, los = aos[valid], los[valid]
    valid = (kind[los] == -1) & (pair[los] == pair[aos])
    aos, los = aos[valid], los[valid]
    p_pair = pair[aos]
    aos_t, los_t = t[aos], np.maximum(t[los], t[aos])
    # TCA: start with the higher end, then take every interior peak that is higher.
    best_t = np.where(el[aos] >= el[los], aos_t, los_t)
    best_el = np.maximum(el[aos], el[los])
    if peaks and aos.size:
        pk_sat = np.concatenate([p[0] for p in peaks]).astype(np.intp)
        pk_site = np.concatenate([p[1] for p in peaks]).astype(np.intp)
        pk_t = np.concatenate([p[2] for p in peaks])
        pk_el = np.concatenate([p[3] for p in peaks])
        pk_pair = pk_sat * n_sites + pk_site
        # Passes are sorted by (pair, aos); find the last pass starting at or before each peak.
        scale = 1e7  # seconds; windows are ≤ 40 days (3.5e6 s)
        pass_key = p_pair.astype(np.float64) * scale + aos_t
        peak_key = pk_pair.astype(np.float64) * scale + pk_t
        which = np.searchsorted(pass_key, peak_key, side="right") - 1
        inside = which >= 0
        which_c = np.clip(which, 0, None)
        inside &= (p_pair[which_c] == pk_pair) & (pk_t <= los_t[which_c]) & np.isfinite(pk_el)
        which_c, pk_t, pk_el = which_c[inside], pk_t[inside], pk_el[inside]
        order_pk = np.lexsort((pk_el, which_c))
        which_c, pk_t, pk_el = which_c[order_pk], pk_t[order_pk], pk_el[order_pk]
        # Last entry per pass is its highest peak (no entries when every peak fell outside).
        last_of = np.flatnonzero(np.append(which_c[1:] != which_c[:-1], which_c.size > 0))
        w_idx, w_t, w_el = which_c[last_of], pk_t[last_of], pk_el[last_of]
        higher = w_el > best_el[w_idx]
        best_t[w_idx[higher]] = w_t[higher]
        best_el[w_idx[higher]] = w_el[higher]
    if aos.size:
        # The culmination's elevation on the exact SGP4 state (the interpolated one is tens of
        # metres off at the pass search's steps; the TCA time barely matters at a maximum).
        exact, err = _exact_topo(batch, frames, jd0, fr0, sat[aos], site[aos], best_t)
        best_el = np.where((err == 0) & np.isfinite(exact.el), exact.el, best_el)
    keep = np.ones(aos.size, dtype=bool)
    if min_max_elevation_deg is not None:
        keep &= best_el >= min_max_elevation_deg
    if min_duration_s is not None:
        keep &= (los_t - aos_t) >= min_duration_s
    return PassTable(
        satellite_ids=batch.ids,
        site_ids=frames.ids,
        start_jd=jd0,
        start_fr=fr0,
        sat_index=sat[aos][keep],
        site_index=site[aos][keep],
        aos_s=aos_t[keep],
        tca_s=best_t[keep],
        los_s=los_t[keep],
        max_elevation_deg=best_el[keep],
        aos_azimuth_deg=az[aos][keep],
        los_azimuth_deg=az[los][keep],
        aos_clipped=clipped[aos][keep],
        los_clipped=clipped[los][keep],
        errors=errors,
    )


def find_passes(  # noqa: PLR0913 - the find_pass_table signature
    batch: SatelliteBatch,
    sites: Sequence[Site] | SiteFrames,
    start: datetime,
    stop: datetime,
    *,
    min_max_elevation_deg: float | None = None,
    min_duration_s: float | None = None,
) -> list[Pass]:
    """:func:`find_pass_table` as a list of :class:`Pass` (sorted by satellite, site, AOS)."""
    return find_pass_table(
        batch,
        sites,
        start,
        stop,
        min_max_elevation_deg=min_max_elevation_deg,
        min_duration_s=min_duration_s,
    ).passes()
