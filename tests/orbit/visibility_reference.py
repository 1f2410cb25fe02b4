"""The visibility algorithm as it was before footprint pruning, kept as the tests' reference.

A frozen copy (commit 62d9e58) of ``groundplane.orbit.visibility.visibility`` and of the pass-search
helpers it used (``_topo``, ``_Group``, ``_newton``, ``_cubic_guess``, ``coarse_step_s``), so that
the new path is compared against the old one even after either changes. It screens every
satellite × site pair with dense matrix products, propagates the whole coarse grid up front and
refines every LOS with Newton on the elevation; slow on purpose, for tests only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    offset_jd_fr,
    propagate,
    teme_to_itrf,
)
from groundplane.orbit.sites import Site
from groundplane.orbit.visibility import Visibility

BoolArray = NDArray[np.bool_]
_DEG = 180.0 / math.pi
_SITE_CHUNK_PAIRS = 1 << 20

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


def _newton(  # noqa: PLR0917 - a numeric kernel: function, bracket, values, guess, iterations
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


def _pair_geometry(
    frames: SiteFrames,
    site: IntArray,
    p: tuple[FloatArray, FloatArray, FloatArray],
    v: tuple[FloatArray, FloatArray, FloatArray],
) -> tuple[FloatArray, FloatArray]:
    """Range (km) and range rate (km/s) of ITRF states from sites."""
    s = frames.ecef_km[site]
    dx, dy, dz = p[0] - s[:, 0], p[1] - s[:, 1], p[2] - s[:, 2]
    rng = np.sqrt(dx * dx + dy * dy + dz * dz)
    return rng, (dx * v[0] + dy * v[1] + dz * v[2]) / rng


def reference_visibility(
    batch: SatelliteBatch,
    sites: Sequence[Site] | SiteFrames,
    jd: float,
    fr: float,
    *,
    max_lookahead_s: float = SECONDS_PER_DAY,
) -> Visibility:
    """Satellites above each site's threshold at the instant ``jd + fr`` (UTC), with LOS times."""
    frames = as_site_frames(sites)
    if not (math.isfinite(jd) and math.isfinite(fr)):
        raise InvalidArgument(f"jd and fr must be finite, got {jd!r}, {fr!r}")
    if not (math.isfinite(max_lookahead_s) and max_lookahead_s > 0):
        raise InvalidArgument(f"max_lookahead_s must be positive, got {max_lookahead_s!r}")
    n_sat, n_site = len(batch), len(frames)
    error_code = np.zeros(n_sat, dtype=np.uint8)
    out_sat: list[IntArray] = []
    out_site: list[IntArray] = []
    out_cols: list[tuple[FloatArray, ...]] = []
    if n_sat and n_site:
        steps = coarse_step_s(batch)
        horizon = np.minimum(0.5 * batch.period_s, max_lookahead_s)
        for step in np.unique(steps):
            members = np.flatnonzero(steps == step)
            span = float(np.max(np.where(np.isfinite(horizon[members]), horizon[members], 0.0)))
            n_steps = max(1, math.ceil(span / float(step)))
            offsets = np.arange(n_steps + 1) * float(step)
            jd_g, fr_g = offset_jd_fr(jd, fr, offsets)
            sub = batch if members.size == n_sat else batch.subset(members)
            prop = propagate(sub, jd_g, fr_g)
            error_code[members] = prop.error_code[:, 0]
            group = _Group(members, float(step), prop.r_teme_km, prop.v_teme_km_s, prop.ok, jd, fr)
            result = _group_visibility(
                group, frames, offsets, jd_g, fr_g, np.minimum(horizon[members], span)
            )
            out_sat.append(members[result[0]])
            out_site.append(result[1])
            out_cols.append(result[2:])
    if out_sat:
        sat = np.concatenate(out_sat)
        site = np.concatenate(out_site)
        cols = [np.concatenate([c[j] for c in out_cols]) for j in range(5)]
    else:
        sat = site = np.zeros(0, dtype=np.intp)
        cols = [np.zeros(0) for _ in range(5)]
    order = np.lexsort((sat, site))
    return Visibility(
        satellite_ids=batch.ids,
        site_ids=frames.ids,
        sat_index=sat[order],
        site_index=site[order],
        azimuth_deg=cols[0][order],
        elevation_deg=cols[1][order],
        range_km=cols[2][order],
        range_rate_km_s=cols[3][order],
        los_in_s=cols[4][order],
        error_code=error_code,
    )


def _group_visibility(  # noqa: PLR0917 - one vectorised screen on shared arrays (candidates, refine)
    group: _Group,
    frames: SiteFrames,
    offsets: FloatArray,
    jd_g: FloatArray,
    fr_g: FloatArray,
    horizon_s: FloatArray,
) -> tuple[IntArray, IntArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    r_itrf, vel = teme_to_itrf(
        np.moveaxis(group.r, -1, 0), np.moveaxis(group.v, -1, 0), earth_rotation(jd_g, fr_g)
    )
    px, py, pz = r_itrf
    # 1. Candidates at the instant: u > ρ·sin(lowest threshold), by matrix products.
    now = np.stack((px[:, 0], py[:, 0], pz[:, 0]), axis=1)  # (G, 3)
    now = np.where(np.isfinite(now), now, 0.0)
    valid_now = group.ok[:, 0]
    up_vec = frames.enu[:, 2, :]  # (K, 3)
    up_off = np.einsum("kj,kj->k", up_vec, frames.ecef_km)
    site_sq = np.einsum("kj,kj->k", frames.ecef_km, frames.ecef_km)
    sin_min = np.sin(np.radians(frames.min_threshold_deg))
    sat_sq = np.einsum("gj,gj->g", now, now)
    n_site = len(frames)
    chunk = max(1, _SITE_CHUNK_PAIRS // max(1, now.shape[0]))
    cand_sat: list[IntArray] = []
    cand_site: list[IntArray] = []
    for k0 in range(0, n_site, chunk):
        k1 = min(n_site, k0 + chunk)
        u = now @ up_vec[k0:k1].T
        u -= up_off[k0:k1]
        rho2 = now @ frames.ecef_km[k0:k1].T
        rho2 *= -2.0
        rho2 += sat_sq[:, None]
        rho2 += site_sq[k0:k1]
        np.sqrt(rho2, out=rho2)
        rho2 *= sin_min[k0:k1]
        hit = u > rho2
        hit &= valid_now[:, None]
        s_idx, k_idx = np.nonzero(hit)
        cand_sat.append(s_idx)
        cand_site.append(k_idx + k0)
    sat = np.concatenate(cand_sat)
    site = np.concatenate(cand_site)
    # 2. Full geometry for candidates; keep those above the azimuth-dependent threshold.
    p0 = (px[sat, 0], py[sat, 0], pz[sat, 0])
    v0 = (vel[0][sat, 0], vel[1][sat, 0], vel[2][sat, 0])
    topo = _topo(frames, site, p0, v0)
    keep = topo.f > 0
    sat, site = sat[keep], site[keep]
    p0 = (p0[0][keep], p0[1][keep], p0[2][keep])
    v0 = (v0[0][keep], v0[1][keep], v0[2][keep])
    az, el = topo.az[keep], topo.el[keep]
    f_prev, df_prev = topo.f[keep], topo.df[keep]
    rng, rr = _pair_geometry(frames, site, p0, v0)
    # 3. Step the visible pairs forward on the coarse grid until they set.
    los = np.full(sat.size, np.inf)
    active = np.arange(sat.size)
    n_cols = offsets.size
    for j in range(1, n_cols):
        if active.size == 0:
            break
        a_sat, a_site = sat[active], site[active]
        ok = group.ok[a_sat, j]
        pj = (px[a_sat, j], py[a_sat, j], pz[a_sat, j])
        vj = (vel[0][a_sat, j], vel[1][a_sat, j], vel[2][a_sat, j])
        tj = _topo(frames, a_site, pj, vj, need_az=bool(frames.has_mask.any()))
        beyond = offsets[j - 1] >= horizon_s[a_sat]
        setting = (~ok | (tj.f <= 0)) & ~beyond
        if setting.any():
            rows = np.flatnonzero(setting)
            pair = active[rows]
            s_rows = a_sat[rows]
            good = ok[rows]
            # SGP4 error ahead: the pass ends at the last valid sample.
            los[pair[~good]] = offsets[j - 1]
            g_rows = rows[good]
            if g_rows.size:
                g_pair = active[g_rows]
                g_sat = s_rows[good]
                fa, fb = f_prev[g_rows], tj.f[g_rows]
                h = offsets[j] - offsets[j - 1]
                da, db = df_prev[g_rows] * h, tj.df[g_rows] * h
                guess = offsets[j - 1] + h * _cubic_guess(fa, fb, da, db)
                seg = group.segments(g_sat, np.full(g_sat.size, j - 1))
                g_site = a_site[g_rows]

                def f_df(
                    t: FloatArray, seg: object = seg, g_site: IntArray = g_site
                ) -> tuple[FloatArray, FloatArray]:
                    pp, vv = seg.itrf_at(t)  # type: ignore[attr-defined]
                    out = _topo(frames, g_site, pp, vv)
                    return out.f, out.df

                a = np.full(g_sat.size, offsets[j - 1])
                los[g_pair] = _newton(f_df, a, a + h, fa, guess, 3)
        still = ~setting & ~beyond
        f_prev, df_prev = tj.f[still], tj.df[still]
        active = active[still]
    return sat, site, az, el, rng, rr, los
