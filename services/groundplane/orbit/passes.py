"""Pass prediction: when each satellite is above each site's threshold, over a time window.

The function searched is ``f(t) = elevation(t) − threshold(azimuth(t))`` with
``threshold = max(site min elevation, mask(azimuth))``; a pass is a maximal interval with
``f > 0``.

Algorithm (everything vectorised over satellites × sites; no loop over satellite × time):

1. Satellites are grouped by a coarse step chosen from their fastest angular motion
   (``n (1+e)² / (1−e²)^{3/2}``, so eccentric orbits are sampled for their perigee); each group
   is propagated on its own uniform grid in one ``SatrecArray.sgp4`` call.
2. At every grid point, ``f`` and its analytic time derivative ``f'`` (from the ITRF velocity)
   are computed for every site.
3. An interval with a sign change of ``f`` holds an AOS or LOS. An interval where ``f ≤ 0`` at
   both ends but ``f'`` goes from + to − holds a local maximum: it is located and, if positive,
   yields a short (grazing) pass. The symmetric case (a dip below the threshold between two
   visible samples) is handled the same way.
4. Roots and maxima are refined with safeguarded regula falsi (Illinois) on the exact geometry
   of the cubic-Hermite interpolated TEME state (position and velocity at both grid ends; the
   interpolation error is ≲ 10 m for the steps chosen), to ≪ 1 ms.
5. TCA is the highest elevation maximum inside the pass (several culminations → the highest).

Known limit: a mask feature (notch) narrower than the azimuth swept in one coarse step, crossed
while the satellite is otherwise below the threshold, can be missed.
"""

from __future__ import annotations

import math
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
#: Step = this angle (rad) of the satellite's fastest orbital motion.
_STEP_ANGLE_RAD = 0.13


def coarse_step_s(batch: SatelliteBatch) -> FloatArray:
    """Coarse search step of each satellite, seconds (one of a few fixed values)."""
    n = batch.mean_motion_rad_s
    e = np.clip(batch.eccentricity, 0.0, 0.99)
    fastest = n * (1.0 + e) ** 2 / (1.0 - e * e) ** 1.5
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(fastest > 0, _STEP_ANGLE_RAD / fastest, _STEPS_S[-1])
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
    """Cubic-Hermite interpolation of TEME states over a set of grid intervals (one per row)."""

    r0: FloatArray
    v0: FloatArray
    r1: FloatArray
    v1: FloatArray
    t0: FloatArray
    step_s: float
    jd0: float
    fr0: float

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
    a step leaving it is replaced by the bracket's midpoint).
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


def _illinois(  # noqa: PLR0913, PLR0917 - a numeric kernel: function, bracket, both values, start, count
    func: Callable[[FloatArray], FloatArray],
    a: FloatArray,
    b: FloatArray,
    fa: FloatArray,
    fb: FloatArray,
    first: FloatArray | None = None,
    iterations: int = 5,
) -> FloatArray:
    """Root of ``func`` in brackets ``[a, b]`` (``fa``, ``fb`` of opposite signs), vectorised."""
    a, b = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
    fa, fb = np.array(fa, dtype=np.float64), np.array(fb, dtype=np.float64)
    side = np.zeros(a.shape, dtype=np.int8)
    for iteration in range(iterations):
        with np.errstate(divide="ignore", invalid="ignore"):
            x = b - fb * (b - a) / (fb - fa)
        if iteration == 0 and first is not None:
            x = np.asarray(first, dtype=np.float64)
        bad = ~((x > a) & (x < b))
        x = np.where(bad, 0.5 * (a + b), x)
        fx = func(x)
        same_a = np.sign(fx) == np.sign(fa)
        # Illinois: halve the retained end's value when the same end is kept twice.
        a_new = np.where(same_a, x, a)
        fa_new = np.where(same_a, fx, np.where(side == -1, 0.5 * fa, fa))
        b_new = np.where(same_a, b, x)
        fb_new = np.where(same_a, np.where(side == 1, 0.5 * fb, fb), fx)
        side = np.where(same_a, 1, -1).astype(np.int8)
        a, b, fa, fb = a_new, b_new, fa_new, fb_new
    with np.errstate(divide="ignore", invalid="ignore"):
        x = b - fb * (b - a) / (fb - fa)
    return np.where((x >= a) & (x <= b), x, 0.5 * (a + b))


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
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.where(
            np.abs(qa) > 1e-12 * (np.abs(qb) + np.abs(qc)),
            (-qb - np.sign(qa) * np.sqrt(disc)) / (2 * qa),
            -qc / qb,
        )
    root = np.where(np.isfinite(root), root, 0.5)
    return np.clip(root, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Search


@dataclass
class _Events:
    sat: list[IntArray]
    site: list[IntArray]
    t: list[FloatArray]
    kind: list[NDArray[np.int8]]  # +1 AOS, −1 LOS
    order: list[FloatArray]  # sort key inside one pair (interval index + sub-order)
    clipped: list[BoolArray]
    az: list[FloatArray]
    el: list[FloatArray]

    def add(  # noqa: PLR0913, PLR0917 - appends one column per event field, hot path
        self,
        sat: IntArray,
        site: IntArray,
        t: FloatArray,
        kind: int,
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
        self.kind.append(np.full(t.size, kind, dtype=np.int8))
        self.order.append(order)
        self.clipped.append(np.broadcast_to(np.asarray(clipped, dtype=bool), t.shape).copy())
        self.az.append(az)
        self.el.append(el)


def _search_group(  # noqa: PLR0912, PLR0915 - one vectorised search (grid, rises/sets, culminations) on shared arrays
    group: _Group,
    frames: SiteFrames,
    duration_s: float,
    events: _Events,
    peaks: list[tuple[IntArray, IntArray, FloatArray, FloatArray]],
) -> None:
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
    widths = np.diff(t_grid)
    for k in range(len(frames)):
        topo = _topo(frames, k, p, v, need_az=False)
        up = np.where(ok, topo.f, -np.inf) > 0

        def at(seg: _Segments, t: FloatArray, site: int = k) -> _Topo:
            pp, vv = seg.itrf_at(t)
            return _topo(frames, site, pp, vv)

        def f_df(seg: _Segments) -> Callable[[FloatArray], tuple[FloatArray, FloatArray]]:
            def inner(t: FloatArray) -> tuple[FloatArray, FloatArray]:
                out = at(seg, t)
                return out.f, out.df

            return inner

        # Window edges: a pass in progress is clipped to the window.
        for column, kind, order in ((0, 1, -1.0), (last, -1, float(last) + 1.0)):
            member = np.flatnonzero(up[:, column])
            if member.size:
                edge = _topo(
                    frames,
                    k,
                    (p[0][member, column], p[1][member, column], p[2][member, column]),
                    (v[0][member, column], v[1][member, column], v[2][member, column]),
                )
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
        f0, f1 = topo.f[:, :-1], topo.f[:, 1:]
        d0, d1 = topo.df[:, :-1], topo.df[:, 1:]

        # (a) sign changes with valid ends: one crossing each.
        change = up0 != up1
        member, interval = np.nonzero(change if all_ok else change & both_ok)
        if member.size:
            seg = group.segments(member, interval)
            a, w = t_grid[interval], widths[interval]
            fa, fb = f0[member, interval], f1[member, interval]
            guess = a + w * _cubic_guess(fa, fb, d0[member, interval] * w, d1[member, interval] * w)
            root = _newton(f_df(seg), a, a + w, fa, guess)
            final = at(seg, root)
            kinds = np.where(fa <= 0, 1, -1).astype(np.int8)
            events.add(
                group.sat[member],
                np.full(member.size, k),
                root,
                1,
                interval.astype(np.float64) + 0.5,
                False,
                final.az,
                final.el,
            )
            events.kind[-1] = kinds

        # (a') sign changes next to an SGP4 error: the event sits at the valid end, clipped.
        member, interval = np.nonzero(change & ~both_ok) if not all_ok else (member[:0],) * 2
        if member.size:
            rising = up1[member, interval]
            col = np.where(rising, interval + 1, interval)
            edge = _topo(
                frames,
                k,
                (p[0][member, col], p[1][member, col], p[2][member, col]),
                (v[0][member, col], v[1][member, col], v[2][member, col]),
            )
            events.add(
                group.sat[member],
                np.full(member.size, k),
                t_grid[col],
                1,
                interval.astype(np.float64) + 0.5,
                True,
                edge.az,
                edge.el,
            )
            events.kind[-1] = np.where(rising, 1, -1).astype(np.int8)

        rising = topo.df > 0
        falling = topo.df < 0
        rising0, rising1 = rising[:, :-1], rising[:, 1:]
        falling0, falling1 = falling[:, :-1], falling[:, 1:]
        # (b) hidden maxima (both ends below, f' from + to −) and hidden dips (the reverse).
        for hidden_max in (True, False):
            if hidden_max:
                cand = rising0 & falling1 & ~(up0 | up1)
            else:
                cand = falling0 & rising1 & up0 & up1
            if not all_ok:
                cand &= both_ok
            member, interval = np.nonzero(cand)
            if member.size == 0:
                continue
            a, w = t_grid[interval], widths[interval]
            fa, fb = f0[member, interval], f1[member, interval]
            da, db = d0[member, interval], d1[member, interval]
            sign = 1.0 if hidden_max else -1.0
            # Screen with the cubic through (f, f') at both ends: drop intervals whose extremum
            # is clearly on the wrong side (2° margin, far beyond the cubic's error here).
            s_star = _max_guess(sign * fa, sign * fb, sign * da * w, sign * db * w)
            s2 = s_star * s_star
            s3 = s2 * s_star
            cubic = (2 * s3 - 3 * s2 + 1) * fa + (s3 - 2 * s2 + s_star) * da * w
            cubic += (-2 * s3 + 3 * s2) * fb + (s3 - s2) * db * w
            keep = sign * cubic > -2.0
            if not keep.any():
                continue
            member, interval, a, w = member[keep], interval[keep], a[keep], w[keep]
            fa, fb, da, db = fa[keep], fb[keep], da[keep], db[keep]
            seg = group.segments(member, interval)

            def deriv(t: FloatArray, seg: _Segments = seg) -> FloatArray:
                return at(seg, t).df

            t_ext = _illinois(deriv, a, a + w, da, db, a + w * s_star[keep], 5)
            at_ext = at(seg, t_ext)
            crossed = (at_ext.f > 0) if hidden_max else (at_ext.f <= 0)
            if not crossed.any():
                continue
            rows = np.flatnonzero(crossed)
            m2, i2 = member[rows], interval[rows]
            seg2 = group.segments(m2, i2)
            a2, b2, te, fe = a[rows], a[rows] + w[rows], t_ext[rows], at_ext.f[rows]
            left = _newton(f_df(seg2), a2, te, fa[rows], 0.5 * (a2 + te), 5)
            right = _newton(f_df(seg2), te, b2, fe, 0.5 * (te + b2), 5)
            at_left, at_right = at(seg2, left), at(seg2, right)
            base = i2.astype(np.float64)
            pair_kinds = (1, -1) if hidden_max else (-1, 1)
            events.add(
                group.sat[m2],
                np.full(m2.size, k),
                left,
                pair_kinds[0],
                base + 0.25,
                False,
                at_left.az,
                at_left.el,
            )
            events.add(
                group.sat[m2],
                np.full(m2.size, k),
                right,
                pair_kinds[1],
                base + 0.75,
                False,
                at_right.az,
                at_right.el,
            )
            if hidden_max:
                peaks.append((group.sat[m2], np.full(m2.size, k), te, at_ext.el[rows]))

        # (c) elevation maxima next to visible samples: TCA candidates.
        del0, del1 = topo.del_[:, :-1], topo.del_[:, 1:]
        el_up = topo.del_ > 0
        cand = (up0 | up1) & el_up[:, :-1] & ~el_up[:, 1:]
        member, interval = np.nonzero(cand if all_ok else cand & both_ok)
        if member.size:
            seg = group.segments(member, interval)
            a, w = t_grid[interval], widths[interval]
            ea, eb = topo.el[member, interval], topo.el[member, interval + 1]
            da, db = del0[member, interval], del1[member, interval]
            guess = a + w * _max_guess(ea, eb, da * w, db * w)

            def el_rate(t: FloatArray, seg: _Segments = seg) -> FloatArray:
                # d(sin el)/dt: same sign as the elevation rate, but smooth through the zenith.
                out = at(seg, t)
                return np.cos(np.radians(out.el)) * out.del_

            t_peak = _illinois(
                el_rate,
                a,
                a + w,
                np.cos(np.radians(ea)) * da,
                np.cos(np.radians(eb)) * db,
                guess,
                4,
            )
            at_peak = at(seg, t_peak)
            peaks.append((group.sat[member], np.full(member.size, k), t_peak, at_peak.el))


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
    if len(batch) and len(frames):
        steps = coarse_step_s(batch)
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
            _search_group(group, frames, duration_s, events, peaks)
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
